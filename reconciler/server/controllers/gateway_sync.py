"""The canary controller's side of the gateway: it applies routes' weights and removes routes,
and backs off a route the gateway refused (1 s, then 2, 4 ... up to a minute, until a try goes
through) while the other routes keep their pace. A refusal is expected (a bad config, a broken
file beside ours, a directory that cannot be written): one log line, no traceback, and not a
failure of the controller's loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.deployment import RunState
from reconciler.gateway.base import Gateway, GatewayError
from reconciler.server.supervise import backoff
from schemas.route import RouteSpec

log = logging.getLogger("reconciler.canary")

# A route whose config the gateway refused is tried again after 1 s, then 2, 4 ... up to this.
MAX_BACKOFF_SECONDS = 60.0
REMOVAL = ("remove",)  # the attempt of taking a route off the gateway

Attempt = tuple[str, ...]  # what is applied: the route's spec key, then group=weight pairs


def spec_key(spec: RouteSpec) -> str:
    """What the gateway serves of a route besides weights (backends, path)."""
    return spec.model_dump_json(exclude={"canary"})


def attempt(spec: RouteSpec, weights: Mapping[str, int]) -> Attempt:
    """The attempt of serving a route's spec with `weights`."""
    return (spec_key(spec), *(f"{group}={weight}" for group, weight in sorted(weights.items())))


def one_line(error: Exception) -> str:
    """An error's message on one line (nginx -t writes several)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def shown(weights: Mapping[str, int]) -> str:
    """Weights as people read them: `stable 90%, canary 10%`."""
    return ", ".join(f"{group} {weight}%" for group, weight in weights.items())


@dataclass(frozen=True)
class Refusal:
    """The gateway refused a route's config `count` times in a row; the route is not tried
    again before `retry_at`, unless with another spec (a new revision), for a rollback, or
    for an operator's action."""

    attempt: Attempt
    weights: dict[str, int] | None  # None for a removal
    error: str
    count: int
    since: datetime
    retry_at: datetime

    def document(self) -> dict[str, Any]:
        """As `GET /canary` shows it (`gateway_refusal`)."""
        return {
            "weights": self.weights,
            "error": self.error,
            "refusals": self.count,
            "since": self.since.isoformat(),
            "next_try_at": self.retry_at.isoformat(),
        }

    def note(self, run: RunState) -> str:
        """What the run's reason gets while the gateway refuses its route's weights."""
        times = f"{self.count} time(s), next try at {self.retry_at.isoformat()}"
        if self.weights is None or self.weights == run.weights:
            return f"weights not applied yet: the gateway refused them ({times}): {self.error}"
        return f"held: the gateway refused weights {shown(self.weights)} ({times}): {self.error}"


class Refusals:
    """Every route's last refusal by the gateway, forgotten at its next success."""

    def __init__(self) -> None:
        self._last: dict[str, Refusal] = {}

    def get(self, route: str) -> Refusal | None:
        """The route's last refusal, None when its last try went through."""
        return self._last.get(route)

    def documents(self) -> dict[str, dict[str, Any]]:
        """Each route the gateway refuses now, as `/api/v1/status` shows it."""
        return {route: refusal.document() for route, refusal in sorted(self._last.items())}

    def removals(self) -> set[str]:
        """The routes the gateway refused to remove."""
        return {route for route, refusal in self._last.items() if refusal.attempt == REMOVAL}

    def waiting(self, route: str, tried: Attempt, now: datetime) -> str | None:
        """The last refusal's error while the route must not be tried again yet, else None.

        Any weights wait (a run held at a step would otherwise try its own weights and the
        next step's in turn); another spec, or a removal, does not.
        """
        last = self._last.get(route)
        if last is None or last.attempt[0] != tried[0] or now >= last.retry_at:
            return None
        return last.error

    def refused(
        self,
        route: str,
        tried: Attempt,
        weights: dict[str, int] | None,
        error: Exception,
        now: datetime,
    ) -> Refusal:
        """Record a refusal; the route's next try waits twice as long as the last (capped)."""
        last = self._last.get(route)
        count = last.count + 1 if last is not None else 1
        wait = timedelta(seconds=backoff(count, most=MAX_BACKOFF_SECONDS))
        since = last.since if last is not None else now
        refusal = Refusal(tried, weights, one_line(error), count, since, now + wait)
        self._last[route] = refusal
        return refusal

    def succeeded(self, route: str, tried: Attempt | None = None) -> None:
        """The gateway took the route's config (`tried`, or any when None): no more waiting."""
        last = self._last.get(route)
        if last is not None and (tried is None or last.attempt == tried):
            del self._last[route]

    def held_until(self, route: str, now: datetime) -> datetime | None:
        """Until when the route's next move is not tried (it was refused), or None."""
        refusal = self._last.get(route)
        return refusal.retry_at if refusal is not None and refusal.retry_at > now else None

    def next_retry(self, served: Iterable[str], now: datetime) -> datetime | None:
        """The earliest retry still to come, forgetting the routes no longer served (but not
        a refused removal, which is tried again)."""
        keep = set(served)
        self._last = {
            route: refusal
            for route, refusal in self._last.items()
            if route in keep or refusal.attempt == REMOVAL
        }
        # A retry time gone by without a try: nothing wants that config any more.
        return min((r.retry_at for r in self._last.values() if r.retry_at > now), default=None)


class GatewaySync:
    """Keeps a gateway at the weights routes should have; None as gateway only decides."""

    def __init__(self, gateway: Gateway | None, clock: Callable[[], datetime]) -> None:
        self.gateway = gateway
        self._clock = clock
        self._applied: dict[str, str] = {}  # route -> the spec key last applied
        self.refusals = Refusals()

    def routes(self) -> set[str]:
        """The routes this process applied, or failed to remove."""
        return set(self._applied) | self.refusals.removals()

    async def ensure(
        self, route: str, spec: RouteSpec, weights: dict[str, int] | None, force: bool = False
    ) -> str | None:
        """Keep the gateway at the weights it should have (self-healing after failures); the
        route's configured weights when `weights` is None.

        Returns:
            None when the gateway has them, else why it refused them (this time, or the last
            time while the route is backing off; `force` tries again at once).
        """
        if self.gateway is None or not spec.traffic_split:
            return None
        wanted = weights or {g.name: g.weight for g in spec.traffic_split}
        same_spec = self._applied.get(route) == spec_key(spec)
        if not same_spec or await self.lacks(route, wanted):
            return await self._apply(route, spec, wanted, force)
        # It has them now (put back by hand, say): a refusal of the same is over.
        self.refusals.succeeded(route, attempt(spec, wanted))
        return None

    async def lacks(self, route: str, weights: Mapping[str, int]) -> bool:
        """Whether the gateway serves `route` with other weights than `weights` (or not)."""
        if self.gateway is None:
            return False
        return await asyncio.to_thread(self.gateway.weights, route) != dict(weights)

    async def remove(self, route: str) -> bool:
        """Stop serving a route that left the configuration; whether the gateway did."""
        self._applied.pop(route, None)
        if self.gateway is None:
            return True
        if self.refusals.waiting(route, REMOVAL, self._clock()) is not None:
            return False
        try:
            await asyncio.to_thread(self.gateway.remove, route)
        except GatewayError as error:
            refusal = self.refusals.refused(route, REMOVAL, None, error, self._clock())
            log.error(
                "route %s: removing it from the gateway failed (%d in a row, next try at %s): %s",
                route, refusal.count, refusal.retry_at.isoformat(), refusal.error,
            )  # fmt: skip
            return False
        self.refusals.succeeded(route)
        log.info("route %s: removed from the gateway", route)
        return True

    async def _apply(
        self, route: str, spec: RouteSpec, weights: Mapping[str, int], force: bool
    ) -> str | None:
        """Apply weights; None when the gateway took them, else why it refused them."""
        assert self.gateway is not None
        tried = attempt(spec, weights)
        waiting = None if force else self.refusals.waiting(route, tried, self._clock())
        if waiting is not None:
            return waiting  # nginx -t is not run again for the route before its time
        try:
            await asyncio.to_thread(self.gateway.apply, route, spec, weights)
        except GatewayError as error:
            refusal = self.refusals.refused(route, tried, dict(weights), error, self._clock())
            log.error(
                "route %s: the gateway refused weights %s (%d in a row, next try at %s): %s",
                route, dict(weights), refusal.count, refusal.retry_at.isoformat(), refusal.error,
            )  # fmt: skip
            return refusal.error
        self.refusals.succeeded(route)
        self._applied[route] = spec_key(spec)
        log.info("route %s: weights %s", route, dict(weights))
        return None
