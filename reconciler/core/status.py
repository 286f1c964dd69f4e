"""A canary's status, in a region and blended across regions: defined once, in Statuspage's words.

The site (overview, region pages, canary pages, the public status page) and the read API all
show what `canary_status` decides, from the thresholds and the incident policy the incident
engine uses: the per-agent and per-region verdicts are `core.incidents`' own (`advance`,
`region_status`, `policy_holds`), not a second reading of the runs. docs/status.md describes
the scale for users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from reconciler.core.incidents import (
    STALE_PERIODS,
    AgentHealth,
    RegionStatus,
    Run,
    Target,
    advance,
    policy_holds,
    region_status,
    started_at,
)
from reconciler.core.resources import Resource


class Status(StrEnum):
    """Atlassian Statuspage's component scale, plus `unknown` for no recent data and `paused`
    for a canary that never runs (`replicas: 0` or `@never`).

    `DEGRADED_PERFORMANCE` is decided by degraded runs (passes slower than a check's
    `degradedThresholdMillis`), `UNDER_MAINTENANCE` by an open maintenance window
    (`core/maintenance.py`). Every place that shows a status has a label, a colour and a rank
    for each.
    """

    OPERATIONAL = "operational"
    DEGRADED_PERFORMANCE = "degraded_performance"
    PARTIAL_OUTAGE = "partial_outage"
    MAJOR_OUTAGE = "major_outage"
    UNDER_MAINTENANCE = "under_maintenance"
    UNKNOWN = "unknown"
    PAUSED = "paused"


# Rare statuses: pages list them only when some canary has them.
RESERVED = frozenset({Status.DEGRADED_PERFORMANCE, Status.UNDER_MAINTENANCE, Status.PAUSED})

LABELS: Mapping[Status, str] = {
    Status.OPERATIONAL: "Operational",
    Status.DEGRADED_PERFORMANCE: "Degraded performance",
    Status.PARTIAL_OUTAGE: "Partial outage",
    Status.MAJOR_OUTAGE: "Major outage",
    Status.UNDER_MAINTENANCE: "Under maintenance",
    Status.UNKNOWN: "No recent data",
    Status.PAUSED: "Paused",
}

# Worst first: lists of canaries sort by this, and a page's headline is its worst status.
SEVERITY: Mapping[Status, int] = {
    Status.MAJOR_OUTAGE: 0,
    Status.PARTIAL_OUTAGE: 1,
    Status.DEGRADED_PERFORMANCE: 2,
    Status.UNDER_MAINTENANCE: 3,
    Status.UNKNOWN: 4,
    Status.OPERATIONAL: 5,
    Status.PAUSED: 6,
}

HEADLINES: Mapping[Status, str] = {
    Status.OPERATIONAL: "All systems operational",
    Status.DEGRADED_PERFORMANCE: "Degraded performance",
    Status.PARTIAL_OUTAGE: "Partial outage",
    Status.MAJOR_OUTAGE: "Major outage",
    Status.UNDER_MAINTENANCE: "Under maintenance",
    Status.UNKNOWN: "No data yet",
    Status.PAUSED: "No data yet",
}


class LastRun(NamedTuple):
    """The most recent run, shown as "last run" beside the status (it does not decide it)."""

    started_at: datetime
    passed: bool
    degraded: bool = False  # passed, but slower than a check's degraded threshold
    retries: int = 0  # the most retries one of its checks made

    @property
    def outcome(self) -> str:
        """`pass`, `degraded` or `fail` (core/outcomes.py says how each counts)."""
        if not self.passed:
            return "fail"
        return "degraded" if self.degraded else "pass"


class RegionState(NamedTuple):
    """A canary's status in one region.

    Attributes:
        status: operational, degraded performance, partial outage, major outage or unknown.
        verdict: the incident engine's verdict on the region (`up`, `down`, `unknown`).
        last_run: the region's most recent run (any agent), or None.
        reason: why, in a few words.
    """

    status: Status
    verdict: RegionStatus
    last_run: LastRun | None
    reason: str


@dataclass(frozen=True)
class CanaryState:
    """A canary's status blended across its regions, and each region's.

    Attributes:
        status: operational, degraded performance, partial outage, major outage or unknown.
        regions: by region name.
        last_run: the canary's most recent run anywhere, or None.
        reason: why, in a few words.
    """

    status: Status
    regions: Mapping[str, RegionState]
    last_run: LastRun | None
    reason: str


def lookback(target: Target) -> timedelta:
    """How far back runs must be read to decide a target's status.

    Enough periods for a verdict and its reversal (`failureThreshold + successThreshold`
    runs, and one more for a run that starts late), and at least the engine's staleness
    horizon. Reading further back would change little and cost every site build more.
    """
    periods = max(STALE_PERIODS, target.failure_threshold + target.success_threshold + 1)
    return timedelta(seconds=periods * target.period)


def _uncleared(runs: Sequence[Run], successes: int) -> bool:
    """Whether the latest failed run is not yet followed by `successes` passes.

    A failure that has not yet reached the failure threshold, or one the success threshold
    has not yet cleared, is a partial outage: the same thresholds the incidents use, read as
    "failing, but not enough".
    """
    for index in range(len(runs) - 1, -1, -1):
        if not runs[index].passed:
            return len(runs) - 1 - index < successes
    return False


def _slow(runs: Sequence[Run], successes: int) -> bool:
    """Whether the latest degraded run is not yet followed by `successes` plain passes (and
    no failure came since: that is `_uncleared`'s to tell). Degraded performance clears as a
    partial outage does."""
    for index in range(len(runs) - 1, -1, -1):
        if not runs[index].passed:
            return False
        if runs[index].degraded:
            return len(runs) - 1 - index < successes
    return False


def _last(runs: Iterable[Run]) -> LastRun | None:
    newest = max(runs, key=started_at, default=None)
    if newest is None:
        return None
    return LastRun(newest.started_at, newest.passed, newest.degraded, newest.retries)


def _region(
    target: Target,
    agents: Sequence[str],
    runs: Mapping[str, Sequence[Run]],
    incident_open: bool,
    fresh_after: datetime,
) -> RegionState:
    mine = {agent: sorted(runs.get(agent, ()), key=started_at) for agent in agents}
    last = _last(agent_runs[-1] for agent_runs in mine.values() if agent_runs)
    health: dict[str, AgentHealth] = {
        agent: advance(AgentHealth(), agent_runs, target.failure_threshold,
                       target.success_threshold)
        for agent, agent_runs in mine.items()
    }  # fmt: skip
    fresh = [a for a, h in health.items() if h.last_run_at and h.last_run_at >= fresh_after]
    if not fresh:
        return RegionState(Status.UNKNOWN, "unknown", last, "no recent runs")
    verdict = region_status(health.values(), fresh_after)
    if verdict == "down":
        if incident_open:
            return RegionState(Status.MAJOR_OUTAGE, verdict, last, "down; an incident is open")
        return RegionState(
            Status.PARTIAL_OUTAGE, verdict, last, "down, not enough regions for the policy"
        )
    failing = [a for a in fresh if _uncleared(mine[a], target.success_threshold)]
    if failing:
        return RegionState(
            Status.PARTIAL_OUTAGE, verdict, last, f"failing on {', '.join(sorted(failing))}"
        )
    slow = [a for a in fresh if _slow(mine[a], target.success_threshold)]
    if slow:
        return RegionState(
            Status.DEGRADED_PERFORMANCE, verdict, last, f"slow on {', '.join(sorted(slow))}"
        )
    return RegionState(Status.OPERATIONAL, verdict, last, "passing")


def canary_status(
    target: Target, runs: Mapping[str, Sequence[Run]], incident_open: bool, now: datetime
) -> CanaryState:
    """Decide a canary's status in each region and blended across its regions.

    Per region, each agent's recent runs go through the incident engine's thresholds
    (`advance`) and the agents combine as the engine combines them (`region_status`):

    - unknown: no agent of the region ran within `STALE_PERIODS` schedule periods;
    - major outage: the region is down and the canary has an open incident;
    - partial outage: the region is down but no incident is open (the policy does not hold),
      or an agent's latest failure is not yet cleared by `successThreshold` passes (failing,
      but not for `failureThreshold` runs in a row);
    - degraded performance: an agent's latest degraded run (passed, slowly) is not yet
      cleared by `successThreshold` plain passes;
    - operational: otherwise.

    Blended: major outage when an incident is open or the policy holds over the regions'
    verdicts now (the engine opens one at its next evaluation); else partial outage when any
    region is failing; else degraded performance when any region is; else operational when
    any region has recent runs; else unknown.

    Args:
        target: the canary's policy, thresholds, period and agents by region.
        runs: recent final runs by agent (any order), reaching back `lookback(target)`.
        incident_open: whether the canary has an open incident.
        now: the time the status is for.

    Returns:
        The blended status, each region's, and the last run.
    """
    fresh_after = now - timedelta(seconds=STALE_PERIODS * target.period)
    regions = {
        name: _region(target, agents, runs, incident_open, fresh_after)
        for name, agents in sorted(target.regions.items())
    }
    last = max(
        (r.last_run for r in regions.values() if r.last_run is not None),
        key=lambda run: run.started_at,
        default=None,
    )
    down = sum(1 for r in regions.values() if r.verdict == "down")
    verdicts = sum(1 for r in regions.values() if r.verdict != "unknown")
    holds = policy_holds(target.policy, down, verdicts, len(regions))
    if incident_open or holds:
        why = "an incident is open" if incident_open else "the incident policy holds"
        regions = {
            name: RegionState(Status.MAJOR_OUTAGE, r.verdict, r.last_run, f"down; {why}")
            if r.verdict == "down"
            else r
            for name, r in regions.items()
        }
        return CanaryState(Status.MAJOR_OUTAGE, regions, last, why)
    failing = [name for name, r in regions.items() if r.status is Status.PARTIAL_OUTAGE]
    if failing:
        return CanaryState(Status.PARTIAL_OUTAGE, regions, last, f"failing in {', '.join(failing)}")
    slow = [name for name, r in regions.items() if r.status is Status.DEGRADED_PERFORMANCE]
    if slow:
        why = f"slow in {', '.join(slow)}"
        return CanaryState(Status.DEGRADED_PERFORMANCE, regions, last, why)
    if any(r.status is Status.OPERATIONAL for r in regions.values()):
        return CanaryState(Status.OPERATIONAL, regions, last, "passing")
    return CanaryState(Status.UNKNOWN, regions, last, "no recent runs")


def worst(statuses: Iterable[Status]) -> Status:
    """The headline status of several canaries (a status page): the worst of those with data.

    Unknown and paused canaries do not hide the others' status; only when every one is
    unknown or paused (or there are none) is the headline unknown.
    """
    known = [s for s in statuses if s not in (Status.UNKNOWN, Status.PAUSED)]
    if not known:
        return Status.UNKNOWN
    return min(known, key=lambda s: SEVERITY[s])


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _last_run_document(run: LastRun | None, times: bool) -> dict[str, Any] | None:
    if run is None:
        return None
    outcome: dict[str, Any] = {"status": run.outcome}
    if run.retries:  # present only when some check retried, as most runs never do
        outcome["retries"] = run.retries
    return {"at": _iso(run.started_at), **outcome} if times else outcome


PAUSED_REASON = "paused: the canary never runs (replicas: 0 or schedule @never)"


def paused(regions: Iterable[str]) -> CanaryState:
    """The state of a canary that never runs, in each region it would run in."""
    state = RegionState(Status.PAUSED, "unknown", None, PAUSED_REASON)
    return CanaryState(Status.PAUSED, dict.fromkeys(sorted(regions), state), None, PAUSED_REASON)


def paused_canaries(
    resources: Iterable[Resource], targets: Mapping[str, Target]
) -> dict[str, CanaryState]:
    """The paused state of every Canary of a revision that is not a target (never runs),
    in the regions of its derived canaries."""
    resources = list(resources)
    never: dict[str, set[str]] = {
        r.name: set() for r in resources if r.kind == "Canary" and r.name not in targets
    }
    for resource in resources:
        if resource.kind == "DerivedCanary" and resource.parent in never:
            never[resource.parent].add(str(resource.spec.get("region", "")))
    return {key: paused(regions) for key, regions in never.items()}


def document(state: CanaryState | None, times: bool = True) -> dict[str, object]:
    """The JSON form the read API returns and the site reads (None: never ran, unknown).

    Args:
        state: the canary's state, or None when it has none (it never runs).
        times: include when the last runs started. The site leaves them out (a page that
            showed them would change with every run, not only when the status does) but
            where the status is unknown: no run came lately, and the last one's time is
            what a reader wants to know.

    Returns:
        `status`, `reason`, `last_run` (`at`, `status`: pass, degraded or fail, and
        `retries` when a check of the run retried; null without runs),
        `regions_down` (regions the incident engine's thresholds call down) and
        `region_status`: by region, its `status`, `reason` and `last_run`.
    """
    if state is None:
        return {
            "status": Status.UNKNOWN.value,
            "reason": "no recent runs",
            "last_run": None,
            "regions_down": [],
            "region_status": {},
        }
    # No region ran lately (an open incident may still make the canary's a major outage).
    quiet = state.status is Status.UNKNOWN or (
        bool(state.regions) and all(r.status is Status.UNKNOWN for r in state.regions.values())
    )
    return {
        "status": state.status.value,
        "reason": state.reason,
        "last_run": _last_run_document(state.last_run, times or quiet),
        "regions_down": sorted(n for n, r in state.regions.items() if r.verdict == "down"),
        "region_status": {
            name: {
                "status": region.status.value,
                "reason": region.reason,
                "last_run": _last_run_document(
                    region.last_run, times or region.status is Status.UNKNOWN
                ),
            }
            for name, region in state.regions.items()
        },
    }
