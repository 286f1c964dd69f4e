"""Maintenance windows: the document's rules, and which windows are open when (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile, git_blob_sha
from reconciler.core.ingest import AcceptedRows
from reconciler.core.load import load_config, load_file
from reconciler.core.maintenance import (
    MaintenanceIndex,
    Window,
    active,
    in_period,
    upcoming,
    windows_of,
    with_maintenance,
)
from reconciler.core.status import CanaryState, RegionState, Status
from reconciler.sitebuild.model import CanaryInfo, Snapshot
from reconciler.sitebuild.sla import Month
from reconciler.sitebuild.sla_pages import canary_sla_context, canary_sla_csv
from schemas.schedule import parse_schedule
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc, run_cli

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window_doc(name: str, spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip().splitlines())
    return (
        f"apiVersion: canary-reconciler/v1\nkind: Maintenance\nmetadata:\n  name: {name}\n"
        f"spec:\n{body}\n"
    )


def recurring(expression: str, duration: timedelta, zone: str = "Europe/Berlin") -> Window:
    return Window(
        "w",
        frozenset({"default/web"}),
        schedule=parse_schedule(expression),
        duration=duration,
        zone=ZoneInfo(zone),
    )


def _sources(files: dict[str, str]) -> list[SourceFile]:
    return [
        SourceFile(path, git_blob_sha(text.encode()), lambda text=text: text.encode())
        for path, text in files.items()
    ]


# -- the document's rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "line", "expected"),
    [
        (
            "canaries: {names: [web]}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T09:00:00Z",
            8,
            "spec.end: end 2026-03-01T09:00:00Z is not after start 2026-03-01T10:00:00Z",
        ),
        (
            "canaries: {names: [web]}\nschedule: '0 2 * * *'\nduration: 1h\ntimezone: Mars/Base",
            9,
            "spec.timezone: unknown time zone 'Mars/Base'",
        ),
        (
            "canaries: {names: [web]}\nschedule: '0 25 * * *'\nduration: 1h",
            7,
            "spec.schedule: invalid cron expression '0 25 * * *': hour value 25 out of range",
        ),
        (
            "canaries: {names: [web]}\nschedule: '0 2 * * *'\nduration: 0s",
            8,
            "spec.duration: duration must be greater than 0",
        ),
        (
            "canaries: {names: [web]}\nschedule: '0 * * * *'\nduration: 2h",
            8,
            "spec.duration: duration 2h is longer than the shortest gap between two openings",
        ),
        # Openings are read on the zone's wall clock and last real time: the spring change
        # takes an hour from the night around it.
        (
            "canaries: {names: [web]}\nschedule: '0 3 * * *'\nduration: 24h\n"
            "timezone: Europe/Berlin",
            8,
            "spec.duration: duration 24h is longer than the shortest gap between two openings "
            "of '0 3 * * *' (23h, across the daylight saving change of 2026-03-29 in "
            "Europe/Berlin): windows would overlap",
        ),
        (
            "canaries: {names: [web]}\nschedule: '0 3 * * SUN'\nduration: 167h30m\n"
            "timezone: Europe/Berlin",
            8,
            "(167h, across the daylight saving change of 2026-03-29 in Europe/Berlin)",
        ),
        (
            "canaries: {names: [web]}\nstart: 2026-03-01T10:00:00",
            7,
            "has no UTC offset",
        ),
        (
            "canaries: {}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z",
            6,
            "spec.canaries: selects nothing",
        ),
    ],
)
def test_bad_windows_are_errors_at_their_line(spec: str, line: int, expected: str) -> None:
    result = load_file("maintenance/w.yaml", window_doc("w", spec).encode())
    messages = [d.format() for d in result.diagnostics]
    assert any(m.startswith(f"maintenance/w.yaml:{line}:") and expected in m for m in messages), (
        messages
    )


def test_a_window_in_an_unknown_region_is_an_error() -> None:
    files = {
        "regions.yaml": region_doc("eu"),
        "w.yaml": window_doc(
            "w",
            "canaries: {names: ['*']}\nregions: [eu, mars]\n"
            "start: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z",
        ),
    }
    sources = [
        SourceFile(p, git_blob_sha(t.encode()), lambda t=t: t.encode()) for p, t in files.items()
    ]
    errors = [d.format() for d in load_config(sources).diagnostics]
    assert any("w.yaml:7:17:" in e and "region 'mars' does not exist" in e for e in errors), errors


# -- selection, compiled ---------------------------------------------------------------------------


def _compiled_windows(documents: dict[str, str]) -> MaintenanceIndex:
    sources = [
        SourceFile(p, git_blob_sha(t.encode()), lambda t=t: t.encode())
        for p, t in documents.items()
    ]
    loaded = load_config(sources)
    assert not [d for d in loaded.diagnostics if d.severity == "error"], loaded.diagnostics
    return MaintenanceIndex(compile_config(loaded.config).resources.values())


FLEET = {
    "regions.yaml": region_doc("eu") + "---\n" + region_doc("us"),
    "agents.yaml": agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"),
    "web.yaml": canary_doc("web"),
    "api.yaml": canary_doc("api", namespace="shop"),
    "db.yaml": canary_doc("db").replace("name: db", "name: db\n  labels: {team: data}"),
}


@pytest.mark.parametrize(
    ("selector", "covered"),
    [
        ("names: ['w*']", {"default/web"}),
        ("namespaces: [shop]", {"shop/api"}),
        ("labels: {team: data}", {"default/db"}),
        ("names: ['*']\n  namespaces: [default]", {"default/web", "default/db"}),
    ],
)
def test_selectors_pick_canaries(selector: str, covered: set[str]) -> None:
    window = window_doc(
        "w", f"canaries:\n  {selector}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z"
    )
    index = _compiled_windows({**FLEET, "w.yaml": window})
    assert index.windows[0].canaries == covered
    for canary in ("default/web", "shop/api", "default/db"):
        assert bool(index.windows_for(f"{canary}@eu-1")) == (canary in covered)


def test_a_region_filter_covers_only_that_region() -> None:
    window = window_doc(
        "w",
        "canaries: {names: [web]}\nregions: [eu]\n"
        "start: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z",
    )
    index = _compiled_windows({**FLEET, "w.yaml": window})
    assert index.windows_for("default/web@eu-1")
    assert not index.windows_for("default/web@us-1")
    rows = AcceptedRows.of(
        canary=["default/web@eu-1", "default/web@eu-1", "default/web@us-1", "default/api@eu-1"],
        started_at=[utc(t) for t in ("2026-03-01 10:30", "2026-03-01 11:00")]
        + [utc("2026-03-01 10:30")] * 2,
    )
    assert index.mark(rows) == 1
    assert rows.table["maintenance"].to_pylist() == [
        True,
        False,
        False,
        False,
    ]  # end excluded; us; other canary
    at = utc("2026-03-01 10:30")
    assert index.silenced("default/web", ["eu"], at)
    assert not index.silenced("default/web", ["eu", "us"], at)
    assert not index.silenced("default/web", [], at), "a resolution in every region"
    assert not index.silenced("default/web", ["eu"], utc("2026-03-01 11:00"))


# -- one-off and recurring openings ----------------------------------------------------------------


def test_one_off_window_is_open_from_start_until_end() -> None:
    window = Window(
        "w",
        frozenset({"default/web"}),
        start=utc("2026-03-01 10:00"),
        end=utc("2026-03-01 11:00"),
    )
    assert window.open_at(utc("2026-03-01 09:59")) is None
    assert window.open_at(utc("2026-03-01 10:00")) is not None
    assert window.open_at(utc("2026-03-01 10:59:59")) is not None
    assert window.open_at(utc("2026-03-01 11:00")) is None
    assert [o.window for o in active([window], utc("2026-03-01 10:30"))] == ["w"]
    soon = upcoming([window], utc("2026-03-01 08:00"), timedelta(days=1))
    assert [(o.start, o.end) for o in soon] == [(utc("2026-03-01 10:00"), utc("2026-03-01 11:00"))]
    assert upcoming([window], utc("2026-03-01 10:30"), timedelta(days=1)) == []


def test_recurring_window_follows_the_zones_clock_across_daylight_saving() -> None:
    window = recurring("0 2 * * *", timedelta(hours=1))
    month = in_period([window], utc("2026-03-27 00:00"), utc("2026-03-31 00:00"))
    assert [o.start for o in month] == [
        utc("2026-03-27 01:00"),  # 02:00 CET
        utc("2026-03-28 01:00"),
        utc("2026-03-29 01:00"),  # 02:00 does not exist that night: 03:00 CEST, same instant
        utc("2026-03-30 00:00"),  # 02:00 CEST
    ]
    assert all(o.end - o.start == timedelta(hours=1) for o in month)
    assert window.open_at(utc("2026-03-30 00:30")) is not None
    assert window.open_at(utc("2026-03-30 01:30")) is None


def test_a_wall_time_that_occurs_twice_opens_once() -> None:
    window = recurring("30 2 * * *", timedelta(minutes=20))
    autumn = in_period([window], utc("2026-10-24 12:00"), utc("2026-10-26 12:00"))
    # 02:30 CEST (00:30 UTC) on the 25th, not again at 02:30 CET an hour later.
    assert [o.start for o in autumn] == [utc("2026-10-25 00:30"), utc("2026-10-26 01:30")]


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    minutes=st.integers(1, 23 * 60),
    offset=st.integers(0, 365 * 24 * 60),
)
def test_daily_windows_open_once_a_local_day_at_their_wall_time(
    zone: str, hour: int, minute: int, minutes: int, offset: int
) -> None:
    """Around every daylight saving change of 2026, in zones both hemispheres."""
    window = recurring(f"{minute} {hour} * * *", timedelta(minutes=minutes), zone)
    tz = ZoneInfo(zone)
    since = utc("2026-01-01 00:00") + timedelta(minutes=offset)
    openings = list(window.occurrences(since, since + timedelta(days=6)))
    days = [start.astimezone(tz).date() for start, _ in openings]
    assert len(days) == len(set(days)) and len(days) in (6, 7)
    for (start, end), (later, _) in zip(openings, openings[1:], strict=False):
        assert end - start == timedelta(minutes=minutes)
        assert end <= later, "openings never overlap"
    for start, _ in openings:
        local = start.astimezone(tz)
        wall = local.replace(hour=hour, minute=minute, tzinfo=None)
        if wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
            assert (local.hour, local.minute) == (hour, minute)
        else:  # skipped by a spring-forward change: the same distance after it
            assert local.replace(tzinfo=None) - wall == timedelta(hours=1)
    # `open_at` agrees with the list of openings.
    probe = since + timedelta(minutes=minutes // 2 + 1)
    expected = next(((s, e) for s, e in openings if s <= probe < e), None)
    assert window.open_at(probe) == expected


def test_plan_shows_an_added_window(config_repo: ConfigRepo, tmp_path: Path) -> None:
    for path, text in FLEET.items():
        config_repo.write(path, text)
    config_repo.commit("fleet")
    state = tmp_path / "state.duckdb"
    assert (
        run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve").code == 0
    )
    config_repo.write(
        "maintenance/w.yaml",
        window_doc(
            "db-upgrade",
            "description: DB upgrade\ncanaries: {labels: {team: data}}\n"
            "schedule: '0 3 * * SUN'\nduration: 2h\ntimezone: Europe/Berlin",
        ),
    )
    result = run_cli("plan", "--repo", config_repo.path, "--state", state)
    assert result.code == 0, result.err
    assert "maintenance.db-upgrade will be created" in result.out
    assert 'selected = ["default/db"]' in result.out.replace("  ", "")
    assert "Plan: 1 to add, 0 to change, 0 to destroy" in result.out
    assert windows_of([]) == []


def test_the_text_plan_cuts_a_fleet_wide_windows_list_and_shows_what_it_gained(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    for path, text in FLEET.items():
        config_repo.write(path, text)
    for index in range(25):
        config_repo.write(f"fleet/c{index:02}.yaml", canary_doc(f"c{index:02}", namespace="fleet"))
    everything = (
        "canaries: {namespaces: [fleet]}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z"
    )
    config_repo.write("maintenance/w.yaml", window_doc("fleet-wide", everything))
    config_repo.commit("25 canaries in one window")
    state = tmp_path / "state.duckdb"
    plan = run_cli("plan", "--repo", config_repo.path, "--state", state)
    assert plan.code == 0, plan.err
    line = next(line for line in plan.out.splitlines() if "selected" in line)
    assert '"fleet/c09", … 15 more] (25 items)' in line and "fleet/c10" not in line
    assert (
        run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve").code == 0
    )

    config_repo.write("fleet/c25.yaml", canary_doc("c25", namespace="fleet"))
    config_repo.remove("fleet/c00.yaml")
    config_repo.commit("one canary more, one less")
    plan = run_cli("plan", "--repo", config_repo.path, "--state", state)
    line = next(line for line in plan.out.splitlines() if "selected" in line)
    assert line.split("= ", 1)[1] == '25 -> 25 items, + ["fleet/c25"], - ["fleet/c00"]'
    # The JSON plan keeps every item.
    shown = run_cli("plan", "--repo", config_repo.path, "--state", state, "--format", "json")
    assert shown.out.count("fleet/c1") >= 15


def test_a_region_in_an_open_window_reads_under_maintenance() -> None:
    def state() -> CanaryState:
        region = RegionState(Status.UNKNOWN, "unknown", None, "no recent runs")
        return CanaryState(Status.UNKNOWN, {"eu": region, "us": region}, None, "no recent runs")

    at = utc("2026-03-01 10:30")
    only_eu = Window(
        "eu-work",
        frozenset({"default/web"}),
        regions=frozenset({"eu"}),
        start=utc("2026-03-01 10:00"),
        end=utc("2026-03-01 11:00"),
    )
    shown = with_maintenance(state(), "default/web", [only_eu], at)
    assert shown.regions["eu"].status == Status.UNDER_MAINTENANCE
    assert shown.regions["us"].status == Status.UNKNOWN
    assert shown.status == Status.UNKNOWN, "us is not covered: the blend stays"
    everywhere = Window(
        "all",
        frozenset({"default/web"}),
        start=utc("2026-03-01 10:00"),
        end=utc("2026-03-01 11:00"),
    )
    assert with_maintenance(state(), "default/web", [everywhere], at).status == (
        Status.UNDER_MAINTENANCE
    )
    later = utc("2026-03-01 11:00")
    assert with_maintenance(state(), "default/web", [everywhere], later).status == Status.UNKNOWN
    assert with_maintenance(state(), "default/api", [everywhere], at).status == Status.UNKNOWN


def test_sla_months_list_their_windows_and_count_them_in_the_csv() -> None:
    canary = CanaryInfo("default/web", "default.web", ("eu", "us"), ("eu-1", "us-1"), ())
    months = [
        Month(date(2026, 2, 1), region, 100, 99, 10.0, 20.0, 30.0, 1772323200)
        for region in (None, "eu", "us")
    ]
    nightly = recurring("0 2 * * SAT", timedelta(hours=2))  # four Saturdays in February
    once = Window(
        "eu-move",
        frozenset({"default/web"}),
        regions=frozenset({"eu"}),
        description="Moving racks",
        start=utc("2026-02-10 08:00"),
        end=utc("2026-02-10 09:00"),
    )
    other = Window(
        "other",
        frozenset({"default/api"}),
        start=utc("2026-02-11 08:00"),
        end=utc("2026-02-11 09:00"),
    )
    snapshot = Snapshot(
        now=int(utc("2026-03-05 12:00").timestamp()),
        canaries=[canary],
        regions=[],
        statuses={},
        failures={},
        figures={},
        windows={},
        tails={},
        incidents=[],
        deployments=[],
        revision=None,
        latest=None,
        months={"default/web": months},
        maintenance=[nightly, once, other],
    )
    page = canary_sla_context(snapshot, canary)
    # The current month is listed too, before its figures are counted.
    march, february = page["maintenance"]
    assert (march["label"], february["label"]) == ("March 2026", "February 2026")
    assert [w["name"] for w in february["windows"]] == ["w", "eu-move", "w", "w", "w"]
    assert february["windows"][1]["regions"] == "eu"
    assert "left out of uptime" in page["maintenance_note"]
    lines = str(canary_sla_csv(snapshot, canary)["csv"]).splitlines()
    assert lines[0].endswith(",maintenance_windows")
    counts = {line.split(",")[1]: line.split(",")[-1] for line in lines[1:]}
    assert counts == {"": "5", "eu": "5", "us": "4"}


def test_reminders_of_an_incident_open_before_a_window_are_held_during_it() -> None:
    from agent.metrics import Metrics
    from reconciler.core.routing import Notification
    from reconciler.server.controllers.maintenance import MaintenanceGate

    window = window_doc(
        "w", "canaries: {names: [web]}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z"
    )
    index = _compiled_windows({**FLEET, "w.yaml": window})
    now = [utc("2026-03-01 10:30")]
    sent: list[dict[str, object]] = []
    metrics = Metrics()
    gate = MaintenanceGate(sent.append, lambda: index, lambda: now[0], metrics)

    def reminder(*canaries: str) -> Notification:
        firing = tuple(
            {"type": "incident_opened", "canary": c, "regions_down": ["eu"]} for c in canaries
        )
        return Notification("chat", "g", firing, (), True, now[0])

    assert gate.holds(reminder("default/web"))
    assert not gate.holds(reminder("default/web", "shop/api")), "an alert outside the window"
    assert 'notifications_suppressed_total{reason="maintenance"} 1' in metrics.render()
    now[0] = utc("2026-03-01 11:00")  # the window has closed: reminders go out again
    assert not gate.holds(reminder("default/web"))


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    form=st.sampled_from(["{m} {h} * * *", "{m} {h} * * 0", "{m} {h} * * 1-5", "{m} */6 * * *"]),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
)
def test_the_longest_duration_validate_takes_never_overlaps_across_daylight_saving(
    zone: str, form: str, hour: int, minute: int
) -> None:
    """A window as long as the shortest gap `validate` measures (in real time) never
    overlaps the next opening around the changes of 2026 in either hemisphere, and a
    minute more is refused."""
    expression = form.format(m=minute, h=hour)
    gap, _ = parse_schedule(expression).shortest_local_gap(ZoneInfo(zone))
    window = recurring(expression, timedelta(seconds=gap), zone)
    for since in (utc("2026-03-20 00:00"), utc("2026-09-25 00:00")):
        openings = list(window.occurrences(since, since + timedelta(days=45)))
        for (_, end), (later, _) in zip(openings, openings[1:], strict=False):
            assert end <= later, f"{expression} in {zone}: overlaps at {later}"
    spec = (
        f"canaries: {{names: [web]}}\nschedule: '{expression}'\n"
        f"duration: {int(gap) // 60}m\ntimezone: {zone}"
    )
    assert not [m for m in load_errors(spec) if "spec.duration" in m]
    longer = spec.replace(f"duration: {int(gap) // 60}m", f"duration: {int(gap) // 60 + 1}m")
    assert [m for m in load_errors(longer) if "windows would overlap" in m]


def load_errors(spec: str) -> list[str]:
    """The messages loading one Maintenance document with this spec gives."""
    result = load_file("maintenance/w.yaml", window_doc("w", spec).encode())
    return [d.format() for d in result.diagnostics if d.severity == "error"]
