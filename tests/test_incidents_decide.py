"""The pure incident decisions: thresholds, region verdicts, policies, incidents, timelines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.incidents import (
    AgentHealth,
    CheckRow,
    Decision,
    OpenIncident,
    Policy,
    RegionHealth,
    Run,
    Target,
    advance,
    decide,
    group_runs,
    region_status,
    targets_of,
)
from reconciler.core.resources import Resource

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PERIOD = 60.0
POLICIES: list[Policy] = ["any", "majority", "all", {"count": 1}, {"count": 2}, {"count": 3}]


def at(periods_ago: float) -> datetime:
    return NOW - timedelta(seconds=periods_ago * PERIOD)


def target(
    regions: Mapping[str, Sequence[str]] | Sequence[str],
    policy: Policy = "majority",
    failures: int = 3,
    successes: int = 2,
) -> Target:
    """A target; a plain list of regions means one agent per region, named after it."""
    by_region = regions if isinstance(regions, Mapping) else {r: [r] for r in regions}
    return Target(
        "default/web",
        policy,
        failures,
        successes,
        PERIOD,
        {r: tuple(a) for r, a in by_region.items()},
    )


def runs(outcomes: str, last: float = 0) -> list[Run]:
    """`outcomes` ("p" pass, "f" fail), one period apart, the last `last` periods ago."""
    count = len(outcomes)
    return [Run(at(last + count - 1 - i), o == "p") for i, o in enumerate(outcomes)]


# How a region gets each verdict in one evaluation: enough runs to cross a threshold, or none.
MAKE = {"down": "fff", "up": "pp", "unknown": ""}


def verdict_mix(mix: str) -> tuple[list[str], dict[str, list[Run]]]:
    """Regions r0, r1, ... with verdicts from a string: d(own), u(p), ?(unknown)."""
    names = [f"r{i}" for i in range(len(mix))]
    kinds = {"d": "down", "u": "up", "?": "unknown"}
    return names, {n: runs(MAKE[kinds[c]]) for n, c in zip(names, mix, strict=True) if c != "?"}


def opens(policy: Policy, mix: str) -> bool:
    names, observed = verdict_mix(mix)
    return decide(target(names, policy), {}, observed, None, NOW).action == "open"


# Columns follow POLICIES: any, majority, all, count 1, count 2, count 3.
POLICY_TABLE = [
    ("duu", [True, False, False, True, False, False]),
    ("ddu", [True, True, False, True, True, False]),
    ("ddd", [True, True, True, True, True, True]),
    ("uuu", [False] * 6),
    ("du?", [True, False, False, True, False, False]),
    ("dd?", [True, True, True, True, True, False]),
    ("d??", [True, True, True, True, False, False]),
    ("???", [False] * 6),
    ("dduu", [True, False, False, True, True, False]),
    ("dddu", [True, True, False, True, True, True]),
]


@pytest.mark.parametrize(("mix", "expected"), POLICY_TABLE)
def test_policy_table(mix: str, expected: list[bool]) -> None:
    assert [opens(policy, mix) for policy in POLICIES] == expected


@pytest.mark.parametrize("policy", POLICIES + [{"count": 5}])
@pytest.mark.parametrize(("outcomes", "expected"), [("fff", "open"), ("pp", "none"), ("", "none")])
def test_one_region_behaves_the_same_under_every_policy(
    policy: Policy, outcomes: str, expected: str
) -> None:
    decision = decide(target(["eu"], policy), {}, {"eu": runs(outcomes)}, None, NOW)
    assert decision.action == expected


def test_a_silent_region_is_unknown_never_up() -> None:
    # eu fails now; us and ap passed, but their last runs are older than 3 periods.
    observed = {"eu": runs("fff"), "us": runs("pp", last=4), "ap": runs("pp", last=3.5)}
    decision = decide(target(["eu", "us", "ap"]), {}, observed, None, NOW)
    assert {n: r.status for n, r in decision.regions.items()} == {
        "eu": "down",
        "us": "unknown",
        "ap": "unknown",
    }
    # majority is over regions with a verdict: 1 of 1.
    assert decision.action == "open"
    fresh = {**observed, "us": runs("pp"), "ap": runs("pp")}
    assert decide(target(["eu", "us", "ap"]), {}, fresh, None, NOW).action == "none"


def test_a_region_turns_unknown_after_three_periods_without_runs() -> None:
    before = decide(target(["eu"]), {}, {"eu": runs("pp")}, None, NOW).regions
    later = NOW + timedelta(seconds=3 * PERIOD)
    assert decide(target(["eu"]), before, {}, None, later).regions["eu"].status == "up"
    stale = decide(target(["eu"]), before, {}, None, later + timedelta(seconds=1))
    assert stale.regions["eu"].status == "unknown"
    assert stale.regions["eu"].last_known == "up"
    assert stale.health_changed


def simulate(
    target_: Target, per_agent: Mapping[str, str], start: OpenIncident | None = None
) -> tuple[str, list[Decision]]:
    """Evaluate once per period, each agent contributing its next run ('-' for none).

    Returns one letter per evaluation (O open, U update, R resolve, . nothing) and the
    decisions.
    """
    regions: Mapping[str, RegionHealth] = {}
    incident = start
    letters, decisions = [], []
    ids = iter(range(1, 100))
    for step in range(max(len(s) for s in per_agent.values())):
        now = NOW + timedelta(seconds=step * PERIOD)
        observed = {
            agent: [Run(now, outcomes[step] == "p")]
            for agent, outcomes in per_agent.items()
            if step < len(outcomes) and outcomes[step] != "-"
        }
        decision = decide(target_, regions, observed, incident, now)
        regions = decision.regions
        if decision.action == "open":
            assert incident is None, "a second incident opened while one is open"
            incident = OpenIncident(next(ids), now)
        elif decision.action == "resolve":
            incident = None
        letters.append({"open": "O", "update": "U", "resolve": "R", "none": "."}[decision.action])
        decisions.append(decision)
    return "".join(letters), decisions


@pytest.mark.parametrize(
    ("outcomes", "failures", "successes", "expected"),
    [
        ("pfpfpfpfpfpf", 3, 2, "............"),  # flapping never opens
        ("ffpffpffpff", 3, 2, "..........."),  # streaks reset on a pass
        ("ffffpp", 3, 2, "..O..R"),  # opens on the 3rd failure, resolves on the 2nd pass
        ("fffpfpfpfp", 3, 2, "..O......."),  # flapping while open never resolves
        ("fffppfff", 3, 2, "..O.R..O"),  # a new incident after a resolved one
        ("fpf", 1, 1, "ORO"),
        ("ffffppp", 2, 3, ".O....R"),
    ],
)
def test_thresholds_and_flapping(
    outcomes: str, failures: int, successes: int, expected: str
) -> None:
    letters, _ = simulate(target(["eu"], "any", failures, successes), {"eu": outcomes})
    assert letters == expected


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ({"a": "down"}, "down"),
        ({"a": "down", "b": "up"}, "up"),  # a tie is not a majority
        ({"a": "down", "b": "down", "c": "up"}, "down"),
        ({"a": "down", "b": "up", "c": "up"}, "up"),
        ({"a": "down", "b": "stale-up"}, "down"),  # a stale agent does not count
        ({"a": "stale-down", "b": "stale-up"}, "unknown"),
        ({"a": "none", "b": "none"}, "unknown"),  # no agent reached a threshold yet
        ({"a": "none", "b": "down"}, "down"),
    ],
)
def test_agents_of_a_region_combine_by_majority(agents: dict[str, str], expected: str) -> None:
    def health(kind: str) -> AgentHealth:
        verdict: Any = kind.removeprefix("stale-") if kind != "none" else None
        last_run = at(4) if kind.startswith("stale-") else at(0)
        return AgentHealth(verdict, 0, 0, last_run, last_run)

    fresh_after = NOW - timedelta(seconds=3 * PERIOD)
    assert region_status([health(k) for k in agents.values()], fresh_after) == expected


def test_several_agents_in_a_region_through_decide() -> None:
    two_of_three = target({"eu": ["eu-1", "eu-2", "eu-3"], "us": ["us-1"]}, "any")
    observed = {"eu-1": runs("fff"), "eu-2": runs("fff"), "eu-3": runs("pp"), "us-1": runs("pp")}
    decision = decide(two_of_three, {}, observed, None, NOW)
    assert decision.regions["eu"].status == "down"
    assert decision.action == "open"
    assert decision.events[0].regions_down == ("eu",)

    one_of_three = {**observed, "eu-2": runs("pp")}
    decision = decide(two_of_three, {}, one_of_three, None, NOW)
    assert decision.regions["eu"].status == "up"
    assert decision.action == "none"


def test_exactly_one_open_incident_and_a_timeline_of_regions() -> None:
    letters, decisions = simulate(
        target(["eu", "us", "ap"], "majority"),
        {"eu": "fffffffppp", "us": "pfffffffpp", "ap": "ppp-------"},
    )
    # eu down at step 2; us down at step 3 (2 of 3: open); ap goes quiet after step 2 and is
    # unknown at step 6; eu recovers at step 8: 1 of 2 regions with a verdict is down.
    assert letters == "...O..U.R."
    opened = decisions[3]
    assert [(e.region, e.change) for e in opened.timeline] == [("eu", "down"), ("us", "down")]
    assert opened.timeline[0].at == NOW + timedelta(seconds=2 * PERIOD)
    assert opened.timeline[1].at == NOW + timedelta(seconds=3 * PERIOD)
    (event,) = opened.events
    assert (event.type, event.canary, event.regions_down) == (
        "incident_opened",
        "default/web",
        ("eu", "us"),
    )
    assert [(e.region, e.change) for e in decisions[6].timeline] == [("ap", "unknown")]
    assert decisions[6].timeline[0].at == NOW + timedelta(seconds=5 * PERIOD)
    assert decisions[6].events == ()
    resolved = decisions[8]
    assert [(e.region, e.change) for e in resolved.timeline] == [("eu", "up")]
    assert [e.type for e in resolved.events] == ["incident_resolved"]


def test_more_regions_going_down_update_the_open_incident() -> None:
    letters, decisions = simulate(target(["eu", "us"], "any"), {"eu": "ffff", "us": "pfff"})
    assert letters == "..OU"
    assert [(e.region, e.change) for e in decisions[3].timeline] == [("us", "down")]
    assert all(d.events == () for d in decisions[3:])


def test_silence_never_resolves_an_incident() -> None:
    # eu and us are down, then both go quiet: they are unknown but still count as down.
    letters, decisions = simulate(
        target(["eu", "us", "ap"], "majority"),
        {"eu": "fff-----", "us": "fff-----", "ap": "pppppppp"},
    )
    assert letters == "..O...U."
    assert {n: r.status for n, r in decisions[-1].regions.items()} == {
        "eu": "unknown",
        "us": "unknown",
        "ap": "up",
    }


def test_a_canary_that_no_longer_runs_anywhere_resolves() -> None:
    letters, _ = simulate(target(["eu"], "any"), {"eu": "fff"})
    assert letters == "..O"
    state = decide(target(["eu"], "any"), {}, {"eu": runs("fff")}, None, NOW).regions
    gone = decide(target([], "any"), state, {}, OpenIncident(1, NOW), NOW)
    assert gone.action == "resolve"
    assert gone.regions == {}
    assert gone.health_changed


def test_nothing_changes_without_new_runs() -> None:
    first = decide(target(["eu", "us"]), {}, {"eu": runs("fff"), "us": runs("fff")}, None, NOW)
    assert first.action == "open"
    again = decide(target(["eu", "us"]), first.regions, {}, OpenIncident(1, NOW), NOW)
    assert (again.action, again.health_changed, again.timeline, again.events) == (
        "none",
        False,
        (),
        (),
    )


def test_runs_already_counted_are_skipped() -> None:
    once = advance(AgentHealth(), runs("ff"), 3, 2)
    twice = advance(once, runs("ff"), 3, 2)
    assert (twice.fails, twice.verdict) == (2, None)
    assert advance(twice, runs("f", last=-1), 3, 2).verdict == "down"


def rows(*spec: tuple[float, str, str]) -> list[CheckRow]:
    return [CheckRow(NOW + timedelta(seconds=s), check, status) for s, check, status in spec]


@pytest.mark.parametrize(
    ("found", "checks", "now_offset", "truncated", "expected", "pending"),
    [
        # two checks started together form one run, failed when any check failed
        (rows((0, "a", "pass"), (0.3, "b", "fail")), 2, 1, False, [(0, False)], False),
        (rows((0, "a", "pass"), (0.3, "b", "pass")), 2, 1, False, [(0, True)], False),
        # the next tick is a new run; the newest waits for its missing check
        (rows((0, "a", "pass"), (0.1, "b", "pass"), (60, "a", "fail")), 2, 61, False,
         [(0, True)], True),
        # ... until it is a period (plus settling time) old
        (rows((0, "a", "pass"), (0.1, "b", "pass"), (60, "a", "fail")), 2, 131, False,
         [(0, True), (60, False)], False),
        # errors fail a run too; a truncated load keeps the newest run back
        (rows((0, "a", "error"), (60, "a", "pass")), 1, 61, True, [(0, False)], True),
        ([], 1, 0, False, [], False),
    ],
)  # fmt: skip
def test_rows_group_into_runs(
    found: list[CheckRow],
    checks: int,
    now_offset: float,
    truncated: bool,
    expected: list[tuple[float, bool]],
    pending: bool,
) -> None:
    now = NOW + timedelta(seconds=now_offset)
    final, waiting = group_runs(found, PERIOD, checks, now, truncated)
    assert [((r.started_at - NOW).total_seconds(), r.passed) for r in final] == expected
    assert waiting is pending


def test_targets_come_from_the_served_resources() -> None:
    def canary(name: str, **spec: Any) -> Resource:
        return Resource("Canary", name, spec, "f")

    def derived(parent: str, agent: str, region: str) -> Resource:
        spec = {"region": region, "agent": agent, "http": [{"name": "a"}], "tcp": [{"name": "b"}]}
        return Resource("DerivedCanary", f"{parent}@{agent}", spec, "f", parent, agent)

    targets, probes = targets_of(
        [
            canary("default/web", schedule="@every 30s", incidentPolicy={"count": 2}),
            canary("default/off", schedule="@never"),
            derived("default/web", "eu-2", "eu"),
            derived("default/web", "eu-1", "eu"),
            derived("default/web", "us-1", "us"),
            derived("default/off", "eu-1", "eu"),
        ]
    )
    assert list(targets) == ["default/web"]
    web = targets["default/web"]
    assert (web.policy, web.failure_threshold, web.success_threshold, web.period) == (
        {"count": 2},
        3,
        2,
        30.0,
    )
    assert web.regions == {"eu": ("eu-1", "eu-2"), "us": ("us-1",)}
    assert sorted(probes) == ["default/web@eu-1", "default/web@eu-2", "default/web@us-1"]
    assert probes["default/web@eu-1"].checks == 2


def test_spooled_runs_that_predate_an_unknown_are_dated_after_it() -> None:
    # eu goes down, then silent (unknown 3 periods after its last run); then its agent ships
    # the failing runs it spooled meanwhile, all started before the unknown entry's time.
    target_, incident = target(["eu"], "any"), OpenIncident(1, at(4))
    first = decide(target_, {}, {"eu": runs("fff", last=4)}, None, at(4))
    assert first.action == "open"
    silent = decide(target_, first.regions, {}, incident, NOW)
    [unknown] = silent.timeline
    assert (unknown.region, unknown.change, unknown.at) == ("eu", "unknown", at(1))
    spooled = decide(target_, silent.regions, {"eu": runs("ff", last=1.5)}, incident, NOW)
    [down] = spooled.timeline
    assert (down.region, down.change) == ("eu", "down")
    # Never before the change it follows: the timeline keeps the order the changes were decided.
    assert down.at == unknown.at
    assert spooled.regions["eu"].changed_at == unknown.at
