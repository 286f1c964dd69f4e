"""The one status (core/status.py): Statuspage's words from the incident engine's thresholds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.incidents import Policy, Run, Target
from reconciler.core.status import (
    LABELS,
    SEVERITY,
    LastRun,
    Status,
    canary_status,
    document,
    lookback,
    paused,
    worst,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PERIOD = 60.0


def target(
    regions: Mapping[str, Sequence[str]] | Sequence[str], policy: Policy = "majority"
) -> Target:
    """Thresholds 3 / 2; a plain list of regions means one agent per region, named after it."""
    by_region = regions if isinstance(regions, Mapping) else {r: [r] for r in regions}
    return Target("web/search", policy, 3, 2, PERIOD, {r: tuple(a) for r, a in by_region.items()})


def runs(outcomes: str, last: float = 0) -> list[Run]:
    """`outcomes` ("p" pass, "f" fail), one period apart, the last `last` periods ago."""
    count = len(outcomes)
    return [
        Run(NOW - timedelta(seconds=(last + count - 1 - i) * PERIOD), o == "p")
        for i, o in enumerate(outcomes)
    ]


def status_of(
    per_agent: Mapping[str, str], regions: Sequence[str] = ("eu", "us"), incident: bool = False,
    policy: Policy = "majority",
) -> tuple[Status, dict[str, Status]]:  # fmt: skip
    state = canary_status(
        target(regions, policy), {a: runs(o) for a, o in per_agent.items()}, incident, NOW
    )
    return state.status, {name: r.status for name, r in state.regions.items()}


def test_one_failed_run_of_three_in_one_region_is_a_partial_outage() -> None:
    # The web/search: failing sometimes, never for failureThreshold runs in a row.
    assert status_of({"eu": "pfp", "us": "ppp"}) == (
        Status.PARTIAL_OUTAGE,
        {"eu": Status.PARTIAL_OUTAGE, "us": Status.OPERATIONAL},
    )
    assert status_of({"eu": "ppf", "us": "ppp"})[0] is Status.PARTIAL_OUTAGE


@pytest.mark.parametrize(
    ("eu", "expected"),
    [
        ("ppppp", Status.OPERATIONAL),
        ("pfpp", Status.OPERATIONAL),  # the failure was cleared by successThreshold passes
        ("pffp", Status.PARTIAL_OUTAGE),  # not cleared yet
        ("fpfpf", Status.PARTIAL_OUTAGE),  # flapping never reaches the failure threshold
        ("pfff", Status.PARTIAL_OUTAGE),  # down in eu, but majority of two regions needs both
        ("ffffpp", Status.OPERATIONAL),  # down, then up again by the success threshold
        ("ffffp", Status.PARTIAL_OUTAGE),  # still down: one pass is not enough
    ],
)
def test_the_same_thresholds_as_the_incidents(eu: str, expected: Status) -> None:
    assert status_of({"eu": eu, "us": "pppp"})[0] is expected


def test_an_open_incident_is_a_major_outage_in_the_regions_that_are_down() -> None:
    blended, regions = status_of({"eu": "pfff", "us": "ppp"}, incident=True)
    assert blended is Status.MAJOR_OUTAGE
    assert regions == {"eu": Status.MAJOR_OUTAGE, "us": Status.OPERATIONAL}


def test_the_policy_holding_is_a_major_outage_before_the_incident_is_stored() -> None:
    assert status_of({"eu": "fff", "us": "ppp"}, policy="any")[0] is Status.MAJOR_OUTAGE
    assert status_of({"eu": "fff", "us": "ppp"}, policy="all")[0] is Status.PARTIAL_OUTAGE
    assert status_of({"eu": "fff", "us": "fff"}, policy="all")[0] is Status.MAJOR_OUTAGE


def test_no_recent_runs_is_unknown_never_operational() -> None:
    silent = canary_status(target(["eu", "us"]), {"eu": runs("ppp", last=3.5)}, False, NOW)
    assert silent.status is Status.UNKNOWN
    assert {r.status for r in silent.regions.values()} == {Status.UNKNOWN}
    assert silent.last_run == LastRun(NOW - timedelta(seconds=3.5 * PERIOD), True)
    never = canary_status(target(["eu"]), {}, False, NOW)
    assert (never.status, never.last_run) == (Status.UNKNOWN, None)
    # One region silent, the other passing: operational where it is known.
    state = canary_status(target(["eu", "us"]), {"us": runs("pp")}, False, NOW)
    assert state.status is Status.OPERATIONAL
    assert state.regions["eu"].status is Status.UNKNOWN


def test_an_open_incident_stays_a_major_outage_while_its_regions_are_silent() -> None:
    state = canary_status(target(["eu"]), {"eu": runs("fff", last=10)}, True, NOW)
    assert state.status is Status.MAJOR_OUTAGE
    assert state.regions["eu"].status is Status.UNKNOWN


def test_agents_of_a_region_combine_as_the_incident_engine_combines_them() -> None:
    two = {"eu": ["eu-1", "eu-2"], "us": ["us-1"]}
    one_down = {"eu-1": runs("fff"), "eu-2": runs("ppp"), "us-1": runs("ppp")}
    state = canary_status(target(two, "any"), one_down, False, NOW)
    # One agent of two cannot tell the target's failure from its own: the region is not down,
    # but it is failing there.
    assert state.regions["eu"].verdict == "up"
    assert state.status is Status.PARTIAL_OUTAGE


def test_the_last_run_is_shown_beside_the_status_but_does_not_decide_it() -> None:
    state = canary_status(target(["eu", "us"]), {"eu": runs("ppp"), "us": runs("pfpp")}, False, NOW)
    assert state.status is Status.OPERATIONAL
    shown = document(state)
    assert shown["last_run"] == {"at": "2026-12-01T12:00:00Z", "status": "pass"}
    failing = canary_status(target(["eu"]), {"eu": runs("pppf")}, False, NOW)
    assert document(failing)["status"] == "partial_outage"
    assert document(failing)["last_run"] == {"at": "2026-12-01T12:00:00Z", "status": "fail"}


def test_runs_arrive_in_any_order() -> None:
    shuffled = list(reversed(runs("ffpp")))
    assert canary_status(target(["eu"]), {"eu": shuffled}, False, NOW).status is Status.OPERATIONAL


def test_lookback_reaches_a_verdict_and_its_reversal_and_the_staleness_horizon() -> None:
    assert lookback(target(["eu"])) == timedelta(seconds=6 * PERIOD)


def test_the_scale_has_room_for_degraded_performance_and_maintenance() -> None:
    assert set(LABELS) == set(SEVERITY) == set(Status)
    assert LABELS[Status.DEGRADED_PERFORMANCE] == "Degraded performance"
    assert LABELS[Status.UNDER_MAINTENANCE] == "Under maintenance"
    assert worst([Status.OPERATIONAL, Status.UNDER_MAINTENANCE]) is Status.UNDER_MAINTENANCE
    assert worst([Status.DEGRADED_PERFORMANCE, Status.PARTIAL_OUTAGE]) is Status.PARTIAL_OUTAGE


def test_a_page_headline_is_its_worst_known_status() -> None:
    assert worst([]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.OPERATIONAL]) is Status.OPERATIONAL
    assert worst([Status.OPERATIONAL, Status.PARTIAL_OUTAGE]) is Status.PARTIAL_OUTAGE
    assert worst([Status.MAJOR_OUTAGE, Status.PARTIAL_OUTAGE]) is Status.MAJOR_OUTAGE
    # A paused canary neither hides the others nor makes the page look healthy.
    assert worst([Status.PAUSED, Status.PARTIAL_OUTAGE]) is Status.PARTIAL_OUTAGE
    assert worst([Status.PAUSED]) is Status.UNKNOWN


def test_a_canary_that_never_runs_is_paused_in_each_region_not_unknown() -> None:
    shown = document(paused(["us", "eu"]))
    assert shown["status"] == "paused" and "replicas: 0" in str(shown["reason"])
    assert {r: s["status"] for r, s in shown["region_status"].items()} == {
        "eu": "paused",
        "us": "paused",
    }
    assert (shown["last_run"], shown["regions_down"]) == (None, [])
    assert LABELS[Status.PAUSED] == "Paused"


def test_each_status_says_why() -> None:
    state = canary_status(target(["eu", "us"], "any"), {"eu": runs("fff"), "us": runs("pfp")},
                          False, NOW)  # fmt: skip
    assert (state.status, state.reason) == (Status.MAJOR_OUTAGE, "the incident policy holds")
    assert state.regions["eu"].reason == "down; the incident policy holds"
    assert state.regions["us"].reason == "failing on us"
