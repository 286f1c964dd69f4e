"""The canary controller: load runs and metrics, decide with the pure core, apply the result.

It wakes when something can change a run, not on a fixed tick: when a revision is published
(new runs, changed routes), when a manual action moved a run, and at the next time the pure
core says a tick could do something (`next_tick_at`: an evaluation due, a step's hold ending,
a progress deadline). New samples alone never wake it: the core reads them only at those
times. A pass that failed is tried again after the supervisor's backoff.

A route whose weights the gateway refuses is tried again after a backoff of its own (1 s,
doubling up to a minute, until the gateway takes them): the other routes keep their pace, and
a refusal is logged in one line, not as a failure of the loop. A run never moves forward on
weights the gateway refused (`core.deployment.refused`); a rollback stands, its weights
applied as soon as the gateway takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.core.deployment import (
    Evaluation,
    GroupSample,
    Refused,
    RunState,
    TickResult,
    apply_action,
    baseline_group,
    new_run,
    next_tick_at,
    refused,
    route_groups,
    tick,
    waits_for_gateway,
)
from reconciler.core.drive import decide
from reconciler.core.refusal import RequestRefused
from reconciler.core.resources import Resource
from reconciler.core.weights import StepSchedule, step_schedule
from reconciler.gateway.base import Gateway
from reconciler.server.controllers.gateway_sync import GatewaySync, shown
from reconciler.server.supervise import Supervisor
from reconciler.store import deployments as store
from reconciler.store.db import Connection, transaction
from reconciler.store.handle import StateHandle
from schemas.route import RouteSpec

log = logging.getLogger("reconciler.canary")

TERMINAL = frozenset({"completed", "rolled_back"})
LOOP = "canary-controller"
# Even with nothing due, a pass this often re-checks the gateway's weights (self-healing).
RESYNC_SECONDS = 300.0
DUE_MARGIN = 0.01


def run_to_dict(run: RunState) -> dict[str, Any]:
    """A run as JSON-able data (datetimes as ISO strings)."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in dataclasses.asdict(run).items()
    }


def run_from_dict(data: Mapping[str, Any]) -> RunState:
    """The inverse of `run_to_dict`."""
    values: dict[str, Any] = {
        key: datetime.fromisoformat(value) if key.endswith("_at") and value else value
        for key, value in data.items()
    }
    return RunState(**values)


def evaluation_detail(evaluation: Evaluation) -> dict[str, Any]:
    """An evaluation's values and thresholds, as stored and shown."""
    detail = dataclasses.asdict(evaluation)
    for key in ("at", "step", "verdict", "reason"):
        detail.pop(key)
    detail["failed_rules"] = list(evaluation.failed_rules)
    return detail


def _merge(*sources: Mapping[str, tuple[int, int, float | None]]) -> dict[str, GroupSample]:
    """Add requests and errors over sources; the p99 is the worst a source reports."""
    merged: dict[str, tuple[int, int, float | None]] = {}
    for source in sources:
        for group, (requests, errors, p99) in source.items():
            old = merged.get(group, (0, 0, None))
            worst = max((p for p in (old[2], p99) if p is not None), default=None)
            merged[group] = (old[0] + requests, old[1] + errors, worst)
    return {group: GroupSample(r, e, p) for group, (r, e, p) in merged.items()}


@dataclass
class _Writes:
    """What one pass (or one action) stores, and the events it announces once stored."""

    work: list[Callable[[Connection], None]] = field(default_factory=list)
    saved: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> runtime
    events: list[dict[str, Any]] = field(default_factory=list)
    ticked: dict[str, datetime] = field(default_factory=dict)  # run id -> when


def _in_transaction(connection: Connection, work: list[Callable[[Connection], None]]) -> None:
    """Every write of a pass in one transaction: one commit instead of two per route."""
    with transaction(connection):
        for write in work:
            write(connection)


def _rollback_not_applied(action: str, run: RunState, error: str) -> RequestRefused:
    """The answer to a rollback that stands while the gateway refuses its weights."""
    return RequestRefused(
        503,
        f"{action} recorded (the run is rolled back), but the gateway refused its weights "
        f"{shown(run.weights)}: {error}; they are not applied yet, and the controller keeps "
        "trying them (`rollback` again tries at once)",
        state=run.state,
        weights=run.weights,
        gateway_error=error,
    )


class DeploymentController:
    """Drives every route's latest canary run through its steps on a gateway."""

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        routes: Callable[[], list[Resource]],
        announce: Callable[[dict[str, Any]], None],
        gateway: Gateway | None,
        interval: float = 1.0,
        loops: Supervisor | None = None,
        results_version: Callable[[], int] | None = None,
    ) -> None:
        """Args:
        state: the server's hold on the state file (runs, evaluations, metrics).
        clock: the current time.
        routes: the served revision's Route resources.
        announce: where canary events go (logs and notification webhooks).
        gateway: the data plane weights are applied to, or None to only decide.
        interval: the least time between two passes (a burst of wake-ups is one pass;
            a canary with `interval: 0s` is evaluated this often).
        loops: where failures are reported (logged, counted, shown in the status).
        results_version: a number that changes whenever result rows are stored; with it,
            a route's synthetic and pushed metrics are read again only when it changed (an
            idle server's evaluations read nothing). None reads them at every evaluation.
        """
        self.state = state
        self.clock = clock
        self._served_routes = routes
        self._announce = announce
        self.gateway = gateway
        self.interval = interval
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._sync = GatewaySync(gateway, clock)  # applies weights, backs off refusals
        self._swept = False  # the gateway's routes were compared with the served ones
        self._loops = loops
        self._wake = asyncio.Event()
        self._ticked: dict[str, datetime] = {}  # run id -> when it was last ticked
        self._saved: dict[str, dict[str, Any]] = {}  # run id -> the runtime last stored
        self._failures: list[tuple[str, Exception]] = []  # this pass's, by route
        self.passes = 0  # passes over the routes since start (an idle server makes none)
        self._results_version = results_version
        self._pushes = 0  # metrics pushed through `push` so far
        # route -> (what the stored metrics depended on, the metrics read then)
        self._stored_metrics: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="canary-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def gateway_refusals(self) -> dict[str, dict[str, Any]]:
        """Each route whose config the gateway refuses now (`/api/v1/status`)."""
        return self._sync.refusals.documents()

    def wake(self) -> None:
        """Pass over the routes soon (a revision was published, a run was acted on)."""
        self._stored_metrics.clear()  # a new revision may point a group at other backends
        self._wake.set()

    async def _loop(self) -> None:
        running = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            wait = await self._supervised_pass()
            ended = running.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, self.interval))
            # Woken early: still no sooner than `interval` after the last pass.
            await asyncio.sleep(max(0.0, ended + self.interval - running.time()))

    async def _supervised_pass(self) -> float:
        """One pass; seconds until the next is due (sooner after a failure, with backoff)."""
        self.passes += 1
        try:
            due = await self._tick_all()
        except Exception as error:  # noqa: BLE001 - reported; the controller goes on
            self._failures.append(("", error))
            due = None
        failures, self._failures = self._failures, []
        if self._loops is None:
            for where, failure in failures:
                log.error("canary controller failed %s", where, exc_info=failure)
            retry = self.interval if failures else RESYNC_SECONDS
        elif failures:
            retry = max(self._loops.failed(LOOP, e, w) for w, e in failures)
        else:
            self._loops.succeeded(LOOP)
            retry = RESYNC_SECONDS
        if due is None:
            return retry
        # A hair late rather than early: a pass a moment before `due` would find nothing
        # to do and wait another `interval`.
        return min(retry, max((due - self.clock()).total_seconds(), 0.0) + DUE_MARGIN)

    # -- load ------------------------------------------------------------------------------

    def _routes(self) -> dict[str, RouteSpec]:
        specs = [
            (r.name, RouteSpec.model_validate(r.spec, strict=False)) for r in self._served_routes()
        ]
        # A route nginx cannot serve as written (auth, rate limits, ...) never goes on it.
        return {name: spec for name, spec in specs if decide(spec).driven}

    async def _current(self, route: str, spec: RouteSpec) -> tuple[RunState, StepSchedule] | None:
        stored = (await self.state.read(store.latest_runs)).get(route)
        return self._run_of(route, spec, stored)

    def _run_of(
        self, route: str, spec: RouteSpec, stored: store.StoredRun | None
    ) -> tuple[RunState, StepSchedule] | None:
        schedule = step_schedule(route, spec)
        if schedule is None or stored is None or stored.state == "superseded":
            return None
        if stored.runtime is None:
            return new_run(route, stored.run_id, spec), schedule
        self._saved.setdefault(stored.run_id, stored.runtime)
        return run_from_dict(stored.runtime), schedule

    async def _samples(
        self, route: str, spec: RouteSpec, since: datetime
    ) -> dict[str, GroupSample]:
        groups = {g.name: [b.url for b in g.backends] for g in spec.traffic_split or []}
        gateway: dict[str, tuple[int, int, float | None]] = {}
        if self.gateway is not None:
            found = await asyncio.to_thread(self.gateway.metrics, route, since)
            gateway = {g: (m.requests, m.errors, m.p99_ms) for g, m in found.items()}
        pushed, synthetic = await self._stored(route, groups, since)
        return _merge(gateway, pushed, synthetic)

    async def _stored(
        self, route: str, groups: dict[str, list[str]], since: datetime
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pushed and synthetic metrics from the state file, read again only when rows were
        stored since the last read for the same step (the synthetic query is the costly part
        of an evaluation)."""
        key: tuple[Any, ...] | None = None
        if self._results_version is not None:
            key = (since, self._results_version(), self._pushes, sorted(groups.items()))
            cached = self._stored_metrics.get(route)
            if cached is not None and cached[0] == key:
                return cached[1]["pushed"], cached[1]["synthetic"]

        def read(connection: Connection) -> tuple[dict[str, Any], dict[str, Any]]:
            return (
                store.pushed_metrics(connection, route, since),
                store.synthetic_metrics(connection, groups, since),
            )

        pushed, synthetic = await self.state.read(read)
        if key is not None:
            self._stored_metrics[route] = (key, {"pushed": pushed, "synthetic": synthetic})
        return pushed, synthetic

    # -- decide and apply ------------------------------------------------------------------

    async def tick_all(self) -> None:
        """One pass over every route with a canary (failures are logged or reported)."""
        await self._supervised_pass()

    async def _tick_all(self) -> datetime | None:
        """One pass; when the next is due (None: only a wake-up can move a run)."""
        async with self._lock:
            routes = self._routes()
            stored = await self.state.read(store.latest_runs) if routes else {}
            due: datetime | None = None
            writes = _Writes()
            for route, spec in routes.items():
                try:
                    at = await self._tick_route(route, spec, stored.get(route), writes)
                except Exception as error:  # noqa: BLE001 - one route must not stop the others
                    self._failures.append((f"route {route}", error))
                    continue
                if at is not None and (due is None or at < due):
                    due = at
            applied = self._sync.routes()
            if not self._swept and self.gateway is not None:
                # A route that left the configuration while no server ran is still on the
                # gateway (its files outlive the process): looked for once, at the first pass.
                applied |= set(await asyncio.to_thread(self.gateway.routes))
                self._swept = True
            for gone in sorted(applied - set(routes)):
                if not await self._sync.remove(gone):
                    self._swept = False  # looked for again at the next pass
            retry = self._sync.refusals.next_retry(routes, self.clock())
            if retry is not None and (due is None or retry < due):
                due = retry
            # Not stored, not ticked: a failed store is decided again at the next pass.
            await self._store(writes)
            live = {run.run_id for run in stored.values()}
            self._ticked = {k: v for k, v in self._ticked.items() if k in live}
            self._ticked.update(writes.ticked)
            return due

    async def _tick_route(
        self, route: str, spec: RouteSpec, stored: store.StoredRun | None, writes: _Writes
    ) -> datetime | None:
        """Tick one route's run if anything can change it; when its next tick is due."""
        current = self._run_of(route, spec, stored)
        if current is None:
            await self._sync.ensure(route, spec, None)
            return None
        run, schedule = current
        now = self.clock()
        last = self._ticked.get(run.run_id)
        held = self._sync.refusals.held_until(route, now)
        due = next_tick_at(run, spec, schedule, last, held) if last is not None else now
        if due is None or due > now:
            # Nothing can move the run yet: keep the gateway right, and store a run never
            # stored (its first pass), without reading any samples.
            await self._sync.ensure(route, spec, run.weights)
            self._save(run, writes)
            return due
        since = run.step_started_at or run.started_at or now
        samples = await self._samples(route, spec, since)
        result = tick(run, spec, schedule, samples, now)
        # A rollback is tried at once: it must not wait for a backoff the refused step began.
        rolls_back = run.state != "rolled_back" and result.run.state == "rolled_back"
        if await self._sync.ensure(route, spec, result.run.weights, rolls_back) is not None:
            result = refused(run, result)
        self._record(route, result, writes)
        writes.ticked[run.run_id] = now
        held = self._sync.refusals.held_until(route, now)
        return next_tick_at(result.run, spec, schedule, now, held)

    def _save(self, run: RunState, writes: _Writes) -> None:
        """Store a run's runtime state with `writes`, unless it is what is stored already."""
        document = run_to_dict(run)
        if self._saved.get(run.run_id) == document:
            return
        now = self.clock()
        writes.work.append(lambda c: store.save_run(c, run.run_id, run.state, document, now))
        writes.saved[run.run_id] = document

    def _record(self, route: str, result: TickResult, writes: _Writes) -> None:
        """Store with `writes` the run a tick or an action left, its evaluation and events."""
        self._save(result.run, writes)
        evaluation = result.evaluation
        if evaluation is not None:
            detail = evaluation_detail(evaluation)
            writes.work.append(
                lambda c: store.add_evaluation(
                    c,
                    result.run.run_id,
                    route,
                    evaluation.at,
                    evaluation.step,
                    evaluation.verdict,
                    evaluation.reason,
                    detail,
                )  # fmt: skip
            )
        writes.events.extend(result.events)

    async def _store(self, writes: _Writes) -> None:
        """Store what a pass or an action decided in one transaction, then announce it."""
        if writes.work:
            await self.state.write(lambda c: _in_transaction(c, writes.work))
        self._saved.update(writes.saved)
        for event in writes.events:
            self._announce(event)

    # -- manual actions and views ----------------------------------------------------------

    async def act(self, route: str, action: str) -> dict[str, Any]:
        """Apply start|pause|resume|promote|rollback and return the route's canary view.

        `rollback` on a run rolled back whose weights the gateway has not taken yet tries them
        again at once, whatever the route's backoff.

        Raises:
            RequestRefused: 404 for a route not in the configuration, 409 without a run or
                when the run's state does not allow the action (the body says its state),
                400 for an unknown action, 503 when the gateway refused the action's weights
                (the run is unchanged, but for a rollback, which stands).
        """
        async with self._lock:
            spec = self._routes().get(route)
            if spec is None:
                raise RequestRefused(404, f"route {route} is not in the configuration")
            current = await self._current(route, spec)
            if current is None:
                raise RequestRefused(409, f"route {route} has no canary run")
            run, schedule = current
            now = self.clock()
            if action == "rollback" and await self._rollback_late(route, spec, run):
                error = await self._sync.ensure(route, spec, run.weights, force=True)
                outcome_of = "accepted" if error is None else "refused"
                await self.state.write(
                    lambda c: store.record_action(c, run.run_id, route, action, now, outcome_of)
                )
                if error is not None:
                    raise _rollback_not_applied(action, run, error)
                log.info("route %s: the rollback's weights applied (manual %s)", route, action)
                return (await self.snapshot(route))[0]
            outcome = apply_action(run, action, spec, schedule, now)
            if isinstance(outcome, Refused):
                await self.state.write(
                    lambda c: store.record_action(c, run.run_id, route, action, now, "refused")
                )
                status = 400 if outcome.reason.startswith("unknown action") else 409
                raise RequestRefused(status, outcome.reason, state=outcome.state)
            # An operator's action tries the gateway at once, whatever the route's backoff.
            error = await self._sync.ensure(route, spec, outcome.run.weights, force=True)
            if error is not None and waits_for_gateway(run, outcome.run):
                await self.state.write(
                    lambda c: store.record_action(c, run.run_id, route, action, now, "refused")
                )
                at = f", step {run.step + 1}/{len(schedule.steps)}" if run.step >= 0 else ""
                raise RequestRefused(
                    503,
                    f"{action} not done: the gateway refused weights "
                    f"{shown(outcome.run.weights)}: {error}; the run is unchanged "
                    f"({run.state}{at})",
                    state=run.state,
                    gateway_error=error,
                )
            writes = _Writes()
            self._record(route, outcome, writes)
            writes.work.append(
                lambda c: store.record_action(c, run.run_id, route, action, now, "accepted")
            )
            await self._store(writes)
            log.info("route %s: %s -> %s (manual %s)", route, run.state, outcome.run.state, action)
            self._ticked.pop(run.run_id, None)  # the run moved: tick it at the next pass
        self.wake()
        if error is not None and outcome.run.state == "rolled_back":
            # The rollback stands though its weights did not get through: say so, loudly.
            raise _rollback_not_applied(action, outcome.run, error)
        return (await self.snapshot(route))[0]

    async def _rollback_late(self, route: str, spec: RouteSpec, run: RunState) -> bool:
        """Whether `run` is rolled back and the gateway does not have its weights yet."""
        if run.state != "rolled_back" or not spec.traffic_split:
            return False
        return await self._sync.lacks(route, run.weights)

    async def push(self, route: str, groups: dict[str, tuple[int, int, float | None]]) -> None:
        """Store per-group metrics a gateway pushed for a route."""
        now = self.clock()
        await self.state.write(lambda c: store.push_metrics(c, route, groups, now))
        self._pushes += 1

    async def snapshot(self, only: str | None = None) -> list[dict[str, Any]]:
        """Every route's canary: state, step, weights, baseline, failures, metrics, evaluations."""
        views = []
        for route, spec in sorted(self._routes().items()):
            if only is not None and route != only:
                continue
            current = await self._current(route, spec)
            if current is None or spec.canary is None:
                continue
            run, schedule = current
            groups = route_groups(spec)
            since = run.step_started_at or run.started_at or self.clock()
            samples = await self._samples(route, spec, since)
            applied = await asyncio.to_thread(self.gateway.weights, route) if self.gateway else None
            stored = (await self.state.read(store.latest_runs))[route]
            recent = await self.state.read(functools.partial(store.evaluations, run_id=run.run_id))
            view = store.run_view(stored, recent).document()
            refusal = self._sync.refusals.get(route)
            if refusal is not None:
                view["reason"] = "; ".join(
                    part for part in (view["reason"], refusal.note(run)) if part
                )
            views.append(
                {
                    **view,
                    "steps": [
                        {"weight": s.weight, "pause": s.pause, "weights": s.weights}
                        for s in schedule.steps
                    ],
                    # What the live run applies now (a run not yet ticked: the route's weights).
                    "weights": run.weights,
                    "gateway_weights": applied,
                    "gateway_refusal": refusal.document() if refusal is not None else None,
                    "canary_group": spec.canary.canary_group,
                    "baseline_group": baseline_group(groups, spec.canary.canary_group),
                    "max_failures": spec.canary.analysis.max_failures,
                    "started_at": run.started_at.isoformat() if run.started_at else None,
                    "step_started_at": run.step_started_at.isoformat()
                    if run.step_started_at
                    else None,
                    "metrics": {
                        g: {"requests": s.requests, "errors": s.errors, "p99_ms": s.p99_ms}
                        for g, s in samples.items()
                    },
                }
            )
        return views
