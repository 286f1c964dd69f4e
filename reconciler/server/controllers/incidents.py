"""The incident controller: every few seconds, load new runs, decide, store and announce."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.metrics import Metrics
from reconciler.core.incidents import (
    Decision,
    IncidentEvent,
    OpenIncident,
    Probe,
    RegionHealth,
    Run,
    Target,
    decide,
    describe_policy,
    group_runs,
    run_window,
    targets_of,
)
from reconciler.core.notifications import canary_context
from reconciler.core.resources import Resource, address_of
from reconciler.server.supervise import Supervisor
from reconciler.store.handle import StateHandle
from reconciler.store.incidents import (
    IncidentWrite,
    changed_canaries,
    list_incidents,
    load_state,
    recent_rows,
    save,
)

log = logging.getLogger("reconciler.server.controllers.incidents")

INTERVAL_VARIABLE = "RECONCILER_INCIDENT_INTERVAL"
DEFAULT_INTERVAL = 5.0
# Rows are stamped `received_at` before the writer thread commits them; looking this far
# back for changes catches rows that were committed after the previous tick looked.
RECEIVED_OVERLAP = timedelta(seconds=60)
# Bounded work per tick: derived canaries loaded, and rows per derived canary.
MAX_PROBES_PER_TICK = 2_000
MAX_ROWS_PER_PROBE = 1_000

HELP = {
    "incidents_opened_total": "Incidents opened since the process started.",
    "incidents_resolved_total": "Incidents resolved since the process started.",
}


def interval_from(environ: Mapping[str, str]) -> float:
    """The evaluation interval in seconds: RECONCILER_INCIDENT_INTERVAL, else 5.

    Args:
        environ: the process environment.

    Returns:
        A positive number of seconds.
    """
    text = environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        log.warning("%s=%r is not a positive number of seconds; using 5", INTERVAL_VARIABLE, text)
        return DEFAULT_INTERVAL
    return seconds


def event_document(
    event: IncidentEvent,
    incident: int,
    target: Target | None,
    canary: Resource | None = None,
) -> dict[str, Any]:
    """The JSON form of an incident event, as notifications carry it (with the canary's
    namespace, labels and severity, which alert routes match on)."""
    return {
        **canary_context(event.canary, canary.spec if canary is not None else None),
        "type": event.type,
        "incident": incident,
        "canary": event.canary,
        "target": event.canary.replace("/", "."),
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "policy": describe_policy(target.policy) if target is not None else None,
        "regions_down": list(event.regions_down),
        "regions_unknown": list(event.regions_unknown),
        "reason": event.reason,
    }


@dataclass
class _Loaded:
    """What one tick read: new runs by canary and agent, and probes still waiting."""

    runs: dict[str, dict[str, list[Run]]]
    pending: set[str]


class IncidentController:
    """Load → decide → apply, every `interval` seconds, on the control plane's state file.

    Memory holds the region states and open incidents (loaded from the state file at
    start), so a tick reads only the results of derived canaries that received rows
    since the previous tick, starting after each agent's cursor. Every change is written
    in one transaction before it is announced, so a restart neither reopens nor duplicates
    an incident.
    """

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        served: Callable[[], Mapping[str, Resource]],
        announce: Callable[[dict[str, Any]], None],
        metrics: Metrics,
        max_result_age: float,
        interval: float = DEFAULT_INTERVAL,
        loops: Supervisor | None = None,
    ) -> None:
        """Args:
        state: the server's hold on the state file (results in, incidents out).
        clock: the current time.
        served: the served revision's resources by address (the same mapping until a
            revision is published).
        announce: where incident events go (logs and notification webhooks).
        metrics: the server's counters.
        max_result_age: seconds; older results are never looked at.
        interval: seconds between evaluations.
        loops: where a failed evaluation is reported (the next waits longer).
        """
        self._state = state
        self._clock = clock
        self._served = served
        self._announce_to = announce
        self._metrics = metrics
        self._max_result_age = max_result_age
        self._interval = interval
        self._loops = loops
        self._health: dict[str, dict[str, RegionHealth]] = {}
        self._open: dict[str, OpenIncident] = {}
        self._pending: set[str] = set()
        self._since: datetime | None = None
        self._resources: Mapping[str, Resource] | None = None
        self._targets: dict[str, Target] = {}
        self._probes: dict[str, Probe] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Load the stored state, then evaluate every `interval` seconds."""
        for name, text in HELP.items():
            self._metrics.help.setdefault(name, text)
            self._metrics.count(name, 0)
        self._health, self._open = await self._state.read(load_state)
        self._task = asyncio.create_task(self._loop(), name="incidents")

    @property
    def open_count(self) -> int:
        """How many incidents are open now."""
        return len(self._open)

    async def recent(
        self, canary: str | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Open incidents first, then the most recent, with timelines (see `list_incidents`).

        Args:
            canary: only this canary key's incidents, or all.
            state: `open`, `resolved`, or None for both.
            limit: at most this many.

        Returns:
            One document per incident.
        """
        return await self._state.read(lambda c: list_incidents(c, canary, state, limit))

    async def stop(self) -> None:
        """Stop evaluating; a tick in progress finishes, so what it stored is announced."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._interval
            try:
                await self.tick()
            except Exception as error:  # noqa: BLE001 - reported; the next tick starts over
                self._since = None
                if self._loops is None:
                    log.exception("incident evaluation failed")
                else:
                    wait = max(wait, self._loops.failed("incidents", error))
            else:
                if self._loops is not None:
                    self._loops.succeeded("incidents")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    def _current_targets(self) -> None:
        # A derived canary new to the configuration is loaded when its first rows arrive.
        resources = self._served()
        if resources is not self._resources:  # a revision was (re)published
            self._targets, self._probes = targets_of(resources.values())
            self._resources = resources

    async def tick(self) -> None:
        """One evaluation of every target; reads only what changed since the last one."""
        self._current_targets()
        now = self._clock()
        loaded = await self._load(now)
        writes: list[tuple[Decision, IncidentWrite]] = []
        for canary in sorted(self._targets.keys() | self._open.keys() | self._health.keys()):
            target = self._targets.get(canary) or Target(canary, "any", 1, 1, 60.0, {})
            incident = self._open.get(canary)
            decision = decide(
                target, self._health.get(canary, {}), loaded.runs.get(canary, {}), incident, now
            )
            if decision.health_changed or decision.action != "none":
                regions = decision.regions if decision.health_changed else None
                write = IncidentWrite(
                    canary, regions, decision.action, incident, decision.timeline, now
                )
                writes.append((decision, write))
        ids: dict[str, int] = {}
        if writes:
            ids = await self._state.write(lambda c: save(c, [w for _, w in writes]))
        self._pending = loaded.pending
        self._since = now
        for decision, write in writes:
            self._apply(decision, write, ids.get(write.canary))

    async def _load(self, now: datetime) -> _Loaded:
        """Group the new rows of changed (or still pending) derived canaries into runs."""
        if self._since is None:
            wanted = set(self._probes)
        else:
            since = self._since - RECEIVED_OVERLAP
            changed = await self._state.read(lambda c: changed_canaries(c, since))
            wanted = (changed | self._pending) & self._probes.keys()
        ordered = sorted(wanted)
        pending = set(ordered[MAX_PROBES_PER_TICK:])
        cursors = {probe: self._cursor(probe, now) for probe in ordered[:MAX_PROBES_PER_TICK]}
        rows = await self._state.read(lambda c: recent_rows(c, cursors, MAX_ROWS_PER_PROBE))
        runs: dict[str, dict[str, list[Run]]] = {}
        for derived, (found, truncated) in rows.items():
            probe = self._probes[derived]
            period = self._targets[probe.canary].period
            final, waiting = group_runs(found, period, probe.checks, now, truncated)
            if waiting:
                pending.add(derived)
            if final:
                runs.setdefault(probe.canary, {}).setdefault(probe.agent, []).extend(final)
        return _Loaded(runs, pending)

    def _cursor(self, derived: str, now: datetime) -> datetime:
        """Rows of a derived canary starting from this time are new: those after the window
        of its agent's last run, or a lookback of enough periods to reach the thresholds (at
        most the maximum result age) for an agent without one."""
        probe = self._probes[derived]
        target = self._targets[probe.canary]
        region = self._health.get(probe.canary, {}).get(probe.region)
        agent = region.agents.get(probe.agent) if region is not None else None
        if agent is not None and agent.last_run_at is not None:
            return agent.last_run_at + run_window(target.period)
        periods = max(target.failure_threshold, target.success_threshold) + 1
        lookback = min(periods * target.period, self._max_result_age)
        return now - timedelta(seconds=lookback)

    def _apply(self, decision: Decision, write: IncidentWrite, incident: int | None) -> None:
        """Take a stored decision into memory, the metrics and the notifications."""
        canary = write.canary
        if decision.health_changed:
            if decision.regions:
                self._health[canary] = dict(decision.regions)
            else:
                self._health.pop(canary, None)
        if incident is None:
            return
        if decision.action == "open":
            self._open[canary] = OpenIncident(incident, write.at)
            self._metrics.count("incidents_opened_total")
        elif decision.action == "resolve":
            self._open.pop(canary, None)
            self._metrics.count("incidents_resolved_total")
        for event in decision.events:
            parent = (self._resources or {}).get(address_of("Canary", canary))
            self._announce(event_document(event, incident, self._targets.get(canary), parent))

    def _announce(self, document: dict[str, Any]) -> None:
        try:
            self._announce_to(document)
        except Exception:  # noqa: BLE001 - a notification failure must not stop detection
            log.exception("cannot send %s for %s", document["type"], document["canary"])
