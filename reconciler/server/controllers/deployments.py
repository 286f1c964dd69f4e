"""The canary controller: load runs and metrics, decide with the pure core, apply the result."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
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
    route_groups,
    tick,
)
from reconciler.core.drive import decide
from reconciler.core.refusal import RequestRefused
from reconciler.core.resources import Resource
from reconciler.core.weights import StepSchedule, step_schedule
from reconciler.gateway.base import Gateway, GatewayError
from reconciler.store import deployments as store
from reconciler.store.handle import StateHandle
from schemas.route import RouteSpec

log = logging.getLogger("reconciler.canary")

TERMINAL = frozenset({"completed", "rolled_back"})


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


def _spec_key(spec: RouteSpec) -> str:
    """What the gateway serves of a route besides weights (backends, path)."""
    return spec.model_dump_json(exclude={"canary"})


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
    ) -> None:
        """Args:
        state: the server's hold on the state file (runs, evaluations, metrics).
        clock: the current time.
        routes: the served revision's Route resources.
        announce: where canary events go (logs and notification webhooks).
        gateway: the data plane weights are applied to, or None to only decide.
        interval: seconds between ticks.
        """
        self.state = state
        self.clock = clock
        self._served_routes = routes
        self._announce = announce
        self.gateway = gateway
        self.interval = interval
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._applied: dict[str, str] = {}  # route -> the spec last applied to the gateway

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="canary-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick_all()
            except Exception:  # one bad tick must not stop the controller
                log.exception("canary controller tick failed")
            await asyncio.sleep(self.interval)

    # -- load ------------------------------------------------------------------------------

    def _routes(self) -> dict[str, RouteSpec]:
        specs = [
            (r.name, RouteSpec.model_validate(r.spec, strict=False)) for r in self._served_routes()
        ]
        # A route nginx cannot serve as written (auth, rate limits, ...) never goes on it.
        return {name: spec for name, spec in specs if decide(spec).driven}

    async def _current(self, route: str, spec: RouteSpec) -> tuple[RunState, StepSchedule] | None:
        schedule = step_schedule(route, spec)
        stored = (await self.state.read(store.latest_runs)).get(route)
        if schedule is None or stored is None or stored.state == "superseded":
            return None
        if stored.runtime is None:
            return new_run(route, stored.run_id, spec), schedule
        return run_from_dict(stored.runtime), schedule

    async def _samples(
        self, route: str, spec: RouteSpec, since: datetime
    ) -> dict[str, GroupSample]:
        groups = {g.name: [b.url for b in g.backends] for g in spec.traffic_split or []}
        gateway: dict[str, tuple[int, int, float | None]] = {}
        if self.gateway is not None:
            found = await asyncio.to_thread(self.gateway.metrics, route, since)
            gateway = {g: (m.requests, m.errors, m.p99_ms) for g, m in found.items()}
        pushed = await self.state.read(lambda c: store.pushed_metrics(c, route, since))
        synthetic = await self.state.read(lambda c: store.synthetic_metrics(c, groups, since))
        return _merge(gateway, pushed, synthetic)

    # -- decide and apply ------------------------------------------------------------------

    async def tick_all(self) -> None:
        """One pass over every route with a canary."""
        async with self._lock:
            routes = self._routes()
            for route, spec in routes.items():
                try:
                    await self._tick_route(route, spec)
                except Exception:  # one route's trouble must not stop the others
                    log.exception("route %s: canary controller tick failed", route)
            for gone in [r for r in self._applied if r not in routes]:
                await self._remove(gone)

    async def _tick_route(self, route: str, spec: RouteSpec) -> None:
        current = await self._current(route, spec)
        if current is None:
            await self._ensure_weights(route, spec, None)
            return
        run, schedule = current
        if run.state in TERMINAL or run.state == "paused":
            await self._ensure_weights(route, spec, run.weights)
            await self._save(run)
            return
        since = run.step_started_at or run.started_at or self.clock()
        samples = await self._samples(route, spec, since)
        result = tick(run, spec, schedule, samples, self.clock())
        await self._apply(route, spec, result)

    async def _remove(self, route: str) -> None:
        """Stop serving a route that left the configuration."""
        self._applied.pop(route, None)
        if self.gateway is None:
            return
        try:
            await asyncio.to_thread(self.gateway.remove, route)
        except GatewayError as error:
            log.error("route %s: removing it from the gateway failed: %s", route, error)
            return
        log.info("route %s: removed from the gateway", route)

    async def _ensure_weights(
        self, route: str, spec: RouteSpec, weights: dict[str, int] | None
    ) -> None:
        """Keep the gateway at the weights it should have (self-healing after failures)."""
        if self.gateway is None or not spec.traffic_split:
            return
        wanted = weights or {g.name: g.weight for g in spec.traffic_split}
        same_spec = self._applied.get(route) == _spec_key(spec)
        if not same_spec or await asyncio.to_thread(self.gateway.weights, route) != wanted:
            await self._set_weights(route, spec, wanted)

    async def _set_weights(self, route: str, spec: RouteSpec, weights: Mapping[str, int]) -> bool:
        if self.gateway is None:
            return True
        try:
            await asyncio.to_thread(self.gateway.apply, route, spec, weights)
        except GatewayError as error:
            log.error("route %s: the gateway refused weights %s: %s", route, dict(weights), error)
            return False
        self._applied[route] = _spec_key(spec)
        log.info("route %s: weights %s", route, dict(weights))
        return True

    async def _save(self, run: RunState) -> None:
        document = run_to_dict(run)
        now = self.clock()
        await self.state.write(lambda c: store.save_run(c, run.run_id, run.state, document, now))

    async def _apply(self, route: str, spec: RouteSpec, result: TickResult) -> None:
        if result.weights_changed is not None:
            await self._set_weights(route, spec, result.weights_changed)
        else:
            await self._ensure_weights(route, spec, result.run.weights)
        await self._save(result.run)
        evaluation = result.evaluation
        if evaluation is not None:
            detail = evaluation_detail(evaluation)
            await self.state.write(
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
        for event in result.events:
            self._announce(event)

    # -- manual actions and views ----------------------------------------------------------

    async def act(self, route: str, action: str) -> dict[str, Any]:
        """Apply start|pause|resume|promote|rollback and return the route's canary view.

        Raises:
            RequestRefused: 404 for a route not in the configuration, 409 without a run or
                when the run's state does not allow the action (the body says its state),
                400 for an unknown action.
        """
        async with self._lock:
            spec = self._routes().get(route)
            if spec is None:
                raise RequestRefused(404, f"route {route} is not in the configuration")
            current = await self._current(route, spec)
            if current is None:
                raise RequestRefused(409, f"route {route} has no canary run")
            run, schedule = current
            outcome = apply_action(run, action, spec, schedule, self.clock())
            now = self.clock()
            if isinstance(outcome, Refused):
                await self.state.write(
                    lambda c: store.record_action(c, run.run_id, route, action, now, "refused")
                )
                status = 400 if outcome.reason.startswith("unknown action") else 409
                raise RequestRefused(status, outcome.reason, state=outcome.state)
            await self._apply(route, spec, outcome)
            await self.state.write(
                lambda c: store.record_action(c, run.run_id, route, action, now, "accepted")
            )
            log.info("route %s: %s -> %s (manual %s)", route, run.state, outcome.run.state, action)
        return (await self.snapshot(route))[0]

    async def push(self, route: str, groups: dict[str, tuple[int, int, float | None]]) -> None:
        """Store per-group metrics a gateway pushed for a route."""
        now = self.clock()
        await self.state.write(lambda c: store.push_metrics(c, route, groups, now))

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
            views.append(
                {
                    **store.run_view(stored, recent).document(),
                    "steps": [
                        {"weight": s.weight, "pause": s.pause, "weights": s.weights}
                        for s in schedule.steps
                    ],
                    # What the live run applies now (a run not yet ticked: the route's weights).
                    "weights": run.weights,
                    "gateway_weights": applied,
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
