"""Incident decisions: runs to agent and region verdicts, verdicts to incidents and events."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from reconciler.core.outcomes import is_up
from reconciler.core.resources import Resource
from schemas.canary import CHECK_TYPES
from schemas.schedule import parse_schedule

Verdict = Literal["up", "down"]
RegionStatus = Literal["up", "down", "unknown"]
Action = Literal["none", "open", "update", "resolve"]
EventType = Literal["incident_opened", "incident_resolved"]
Policy = str | Mapping[str, int]

# A region (or agent) whose latest run is older than this many schedule periods is unknown.
STALE_PERIODS = 3
# Rows of one derived canary that start within this many seconds of a run's first row (and
# within half a period) belong to that run: an agent starts all checks of a tick together.
RUN_WINDOW_SECONDS = 2.0
# A run missing some of its checks is taken as it is once it is this much older than a period.
RUN_SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    """What decides a canary's incidents: its policy, thresholds, period and where it runs.

    Attributes:
        canary: the canary key (`namespace/name`).
        policy: `any`, `majority`, `all` or `{"count": N}`.
        failure_threshold: consecutive failed runs that make an agent's verdict `down`.
        success_threshold: consecutive passed runs that make an agent's verdict `up`.
        period: the schedule period in seconds.
        regions: the agents probing the canary, by region.
    """

    canary: str
    policy: Policy
    failure_threshold: int
    success_threshold: int
    period: float
    regions: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Probe:
    """A derived canary as the incident controller sees it."""

    canary: str
    agent: str
    region: str
    checks: int


class CheckRow(NamedTuple):
    """One stored result, reduced to what grouping into runs needs (a tuple: statuses are
    decided over tens of thousands of them a build)."""

    started_at: datetime
    check: str
    status: str
    retries: int = 0


class Run(NamedTuple):
    """The checks of a derived canary at one schedule tick; failed when any did not pass.

    `degraded`: it passed, and some check was degraded (slow); `retries`: the most retries
    one of its checks made (shown, never deciding anything). A tuple: a site build groups
    tens of thousands of rows into runs, and a frozen dataclass took three times as long to
    make.
    """

    started_at: datetime
    passed: bool
    degraded: bool = False
    retries: int = 0


class AgentHealth(NamedTuple):
    """One agent's view of a target, with the streaks that make its verdict stable (a
    tuple, as `Run`: a site build makes one per derived canary).

    Attributes:
        verdict: `up` or `down` once a threshold was reached, else None.
        fails: consecutive failed runs up to the last one.
        passes: consecutive passed runs up to the last one.
        changed_at: start of the run that set the verdict.
        last_run_at: start of the latest run taken into account (the agent's cursor).
    """

    verdict: Verdict | None = None
    fails: int = 0
    passes: int = 0
    changed_at: datetime | None = None
    last_run_at: datetime | None = None


@dataclass(frozen=True)
class RegionHealth:
    """A region's verdict on a target, the last verdict it had, and its agents' views."""

    status: RegionStatus = "unknown"
    last_known: Verdict | None = None
    changed_at: datetime | None = None
    agents: Mapping[str, AgentHealth] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenIncident:
    """The open incident of a target."""

    id: int
    opened_at: datetime


@dataclass(frozen=True)
class TimelineEntry:
    """A region's status changed at `at` while an incident was open (or opened)."""

    at: datetime
    region: str
    change: RegionStatus


@dataclass(frozen=True)
class IncidentEvent:
    """An incident opened or resolved; the controller adds the incident id and sends it."""

    type: EventType
    canary: str
    at: datetime
    regions_down: tuple[str, ...]
    regions_unknown: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Decision:
    """What to store and announce for one target after one evaluation.

    Attributes:
        regions: the new state of every region the target runs in.
        health_changed: whether `regions` differs from the state given.
        action: `open` a new incident, `update` the open one's timeline, `resolve` it, or
            `none`.
        timeline: entries to append to the (new or open) incident's timeline.
        events: `incident_opened` / `incident_resolved`, at most one.
    """

    regions: Mapping[str, RegionHealth]
    health_changed: bool
    action: Action = "none"
    timeline: tuple[TimelineEntry, ...] = ()
    events: tuple[IncidentEvent, ...] = ()


def targets_of(resources: Iterable[Resource]) -> tuple[dict[str, Target], dict[str, Probe]]:
    """The targets to evaluate and their probes, from the served revision's resources.

    Canaries that never run (`@never`, or an unparsable schedule) are left out.

    Args:
        resources: every resource of the served revision.

    Returns:
        Targets by canary key, and probes by derived canary id (`namespace/name@agent`).
    """
    canaries: dict[str, Resource] = {}
    derived: list[Resource] = []
    for resource in resources:
        if resource.kind == "Canary":
            canaries[resource.name] = resource
        elif resource.kind == "DerivedCanary":
            derived.append(resource)
    targets: dict[str, Target] = {}
    for key, canary in canaries.items():
        spec = canary.spec
        try:
            period = parse_schedule(spec.get("schedule", "@every 1m")).period_seconds()
        except ValueError:
            period = None
        if period is None or period <= 0:
            continue
        targets[key] = Target(
            key,
            spec.get("incidentPolicy", "majority"),
            int(spec.get("failureThreshold", 3)),
            int(spec.get("successThreshold", 2)),
            period,
            {},
        )
    regions: dict[str, dict[str, list[str]]] = {}
    probes: dict[str, Probe] = {}
    for resource in derived:
        parent = resource.parent or ""
        if parent not in targets:
            continue
        region, agent = str(resource.spec["region"]), resource.agent or ""
        checks = sum(len(resource.spec.get(kind) or []) for kind in CHECK_TYPES)
        probes[resource.name] = Probe(parent, agent, region, checks)
        regions.setdefault(parent, {}).setdefault(region, []).append(agent)
    for key, target in targets.items():
        by_region = {r: tuple(sorted(a)) for r, a in sorted(regions.get(key, {}).items())}
        targets[key] = replace(target, regions=by_region)
    return targets, probes


def run_window(period: float) -> timedelta:
    """How long after a run's first row its other rows may start: rows starting later
    belong to a later run. At most half a period, so two ticks never merge."""
    return timedelta(seconds=min(RUN_WINDOW_SECONDS, period / 2))


# A `CheckRow`'s or a `Run`'s start (their first field), as a sort key.
started_at = operator.itemgetter(0)


def group_runs(
    rows: Sequence[CheckRow], period: float, checks: int, now: datetime, truncated: bool = False
) -> tuple[tuple[Run, ...], bool]:
    """Group one derived canary's rows into runs, keeping back a run that may still grow.

    A run starts at its earliest row; later rows join it while they start less than
    `min(RUN_WINDOW_SECONDS, period / 2)` after that. The newest run is final once all
    `checks` reported, or once it is `period + RUN_SETTLE_SECONDS` old; earlier runs are
    final because a newer one exists.

    Args:
        rows: the rows, in any order.
        period: the canary's schedule period in seconds.
        checks: how many checks the derived canary has.
        now: the evaluation time.
        truncated: more rows exist after these, so the newest run is not final.

    Returns:
        The final runs, oldest first, and whether a run was kept back.
    """
    window = run_window(period)
    groups: list[tuple[datetime, set[str], bool, bool, int]] = []
    for row in sorted(rows, key=started_at):
        slow = row.status == "degraded"
        if groups and row.started_at < groups[-1][0] + window:
            start, names, passed, degraded, retries = groups[-1]
            names.add(row.check)
            passed = passed and is_up(row.status)
            groups[-1] = (start, names, passed, degraded or slow, max(retries, row.retries))
        else:
            groups.append((row.started_at, {row.check}, is_up(row.status), slow, row.retries))
    pending = False
    if groups:
        start, names, *_ = groups[-1]
        settled = now - start >= timedelta(seconds=period + RUN_SETTLE_SECONDS)
        if truncated or not (len(names) >= checks or settled):
            groups.pop()
            pending = True
    runs = (
        Run(start, passed, passed and degraded, retries)
        for start, _, passed, degraded, retries in groups
    )
    return tuple(runs), pending


def advance(agent: AgentHealth, runs: Sequence[Run], failures: int, successes: int) -> AgentHealth:
    """Feed an agent's new runs, oldest first, through its thresholds.

    Runs that start at or before the agent's cursor (`last_run_at`) were counted already
    and are skipped.

    Args:
        agent: the agent's state before these runs.
        runs: the new runs.
        failures: the failure threshold.
        successes: the success threshold.

    Returns:
        The state after the runs.
    """
    verdict, fails, passes = agent.verdict, agent.fails, agent.passes
    changed_at, last_run_at = agent.changed_at, agent.last_run_at
    for run in runs:
        if last_run_at is not None and run.started_at <= last_run_at:
            continue
        last_run_at = run.started_at
        if run.passed:
            fails, passes = 0, passes + 1
            if verdict != "up" and passes >= successes:
                verdict, changed_at = "up", run.started_at
        else:
            fails, passes = fails + 1, 0
            if verdict != "down" and fails >= failures:
                verdict, changed_at = "down", run.started_at
    return AgentHealth(verdict, fails, passes, changed_at, last_run_at)


def region_status(agents: Iterable[AgentHealth], fresh_after: datetime) -> RegionStatus:
    """Combine a region's agents: down when more than half of those with a verdict are down.

    Only agents whose latest run started at or after `fresh_after` count; without any such agent
    with a verdict the region is `unknown`. With two agents disagreeing the region is up:
    one agent alone cannot tell a target's failure from its own.

    Args:
        agents: the region's agents.
        fresh_after: the oldest latest run that still counts.

    Returns:
        `up`, `down` or `unknown`.
    """
    verdicts = [
        a.verdict
        for a in agents
        if a.verdict is not None and a.last_run_at is not None and a.last_run_at >= fresh_after
    ]
    if not verdicts:
        return "unknown"
    down = sum(1 for v in verdicts if v == "down")
    return "down" if down * 2 > len(verdicts) else "up"


def policy_holds(policy: Policy, down: int, verdicts: int, regions: int) -> bool:
    """Whether enough regions are down to have an incident.

    Args:
        policy: `any`, `majority` (more than half of the regions with a verdict), `all`
            (every region with a verdict) or `{"count": N}` (at least N regions, capped at
            the number of regions the canary runs in, so one region behaves like `any`).
        down: regions down.
        verdicts: regions with a verdict (up or down); unknown regions are not counted.
        regions: regions the canary runs in.

    Returns:
        True when the policy says the target is down.
    """
    if down <= 0:
        return False
    if isinstance(policy, Mapping):
        return down >= min(int(policy["count"]), max(regions, 1))
    if policy == "any":
        return True
    if policy == "all":
        return down >= verdicts
    return down * 2 > verdicts  # majority, the default


def describe_policy(policy: Policy) -> str:
    """The policy as text: `any`, `majority`, `all` or `count: N`."""
    if isinstance(policy, Mapping):
        return f"count: {policy['count']}"
    return policy


def _status_at(
    region: RegionHealth,
    status: RegionStatus,
    agents: Mapping[str, AgentHealth],
    now: datetime,
    period: float,
) -> datetime:
    """When a region's status changed, from its agents' runs: never later than `now`, and
    never earlier than the region's previous change, so its timeline stays in the order the
    changes were decided (spooled runs that arrive late can predate an `unknown`)."""
    found = _run_time(region, status, agents, now, period)
    if region.changed_at is not None and found < region.changed_at:
        return min(now, region.changed_at)
    return found


def _run_time(
    region: RegionHealth,
    status: RegionStatus,
    agents: Mapping[str, AgentHealth],
    now: datetime,
    period: float,
) -> datetime:
    runs = [a.last_run_at for a in agents.values() if a.last_run_at is not None]
    if status == "unknown":
        if not runs:
            return now
        return min(now, max(runs) + timedelta(seconds=STALE_PERIODS * period))
    changes = [a.changed_at for a in agents.values() if a.changed_at is not None]
    latest = max(changes, default=None)
    if latest is not None and (region.changed_at is None or latest > region.changed_at):
        return min(now, latest)
    return min(now, max(runs, default=now))  # e.g. an agent with an old verdict came back


def decide(
    target: Target,
    prior: Mapping[str, RegionHealth],
    runs: Mapping[str, Sequence[Run]],
    incident: OpenIncident | None,
    now: datetime,
) -> Decision:
    """Evaluate one target: new region states, what happens to its incident, and events.

    Each agent's new runs go through the thresholds; each region's agents combine by
    `region_status`; the regions combine by the target's policy. A target without an
    incident opens one when the policy holds over the regions with a verdict. An open
    incident resolves when the policy no longer holds, where a region that went `unknown`
    while down still counts as down: silence never resolves an incident.

    Args:
        target: the canary's policy, thresholds, period and regions (no regions: it no longer
            runs anywhere, and an open incident resolves).
        prior: the regions' states after the previous evaluation.
        runs: new final runs by agent, oldest first.
        incident: the target's open incident, if any.
        now: the evaluation time.

    Returns:
        The decision.
    """
    fresh_after = now - timedelta(seconds=STALE_PERIODS * target.period)
    regions: dict[str, RegionHealth] = {}
    changes: list[TimelineEntry] = []
    for name, agent_names in target.regions.items():
        old = prior.get(name, RegionHealth())
        agents = {
            agent: advance(
                old.agents.get(agent, AgentHealth()),
                runs.get(agent, ()),
                target.failure_threshold,
                target.success_threshold,
            )
            for agent in agent_names
        }
        status = region_status(agents.values(), fresh_after)
        changed_at = old.changed_at
        if status != old.status:
            changed_at = _status_at(old, status, agents, now, target.period)
            changes.append(TimelineEntry(changed_at, name, status))
        last_known: Verdict | None = old.last_known if status == "unknown" else status
        regions[name] = RegionHealth(status, last_known, changed_at, agents)
    health_changed = regions != dict(prior)
    down = sorted(n for n, r in regions.items() if r.status == "down")
    unknown = sorted(n for n, r in regions.items() if r.status == "unknown")
    verdicts = len(regions) - len(unknown)
    policy = describe_policy(target.policy)
    if incident is None:
        if not policy_holds(target.policy, len(down), verdicts, len(regions)):
            return Decision(regions, health_changed)
        opened = tuple(
            TimelineEntry(r.changed_at or now, n, r.status)
            for n, r in regions.items()
            if r.status != "up"
        )
        reason = f"{len(down)} of {len(regions)} regions down (policy {policy})"
        event = IncidentEvent(
            "incident_opened", target.canary, now, tuple(down), tuple(unknown), reason
        )
        return Decision(regions, health_changed, "open", opened, (event,))
    silent = [n for n in unknown if regions[n].last_known == "down"]
    if policy_holds(target.policy, len(down) + len(silent), verdicts + len(silent), len(regions)):
        return Decision(regions, health_changed, "update" if changes else "none", tuple(changes))
    if regions:
        reason = f"{len(down)} of {len(regions)} regions down (policy {policy})"
    else:
        reason = "the canary no longer runs in any region"
    event = IncidentEvent(
        "incident_resolved", target.canary, now, tuple(down), tuple(unknown), reason
    )
    return Decision(regions, health_changed, "resolve", tuple(changes), (event,))
