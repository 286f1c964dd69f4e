"""A data plane kept in memory: the `Gateway` seam for controller tests and dry runs.

It serves nothing. It keeps what the canary controller applied (weights per route, and every
change in order) and answers `metrics` from traffic the caller records, so a controller's
progression and rollback are decided exactly as against nginx, without a process or a port.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.gateway.base import Gateway, GatewayError, GroupMetrics, check_weights
from schemas.route import RouteSpec


@dataclass(frozen=True, slots=True)
class Served:
    """Requests one group of a route served at one time, as an access log would record them.

    Attributes:
        at: when they were served (timezone-aware).
        group: the traffic group that served them.
        latencies_ms: one latency per request.
        errors: how many of them were 5xx.
    """

    at: datetime
    group: str
    latencies_ms: tuple[float, ...]
    errors: int = 0


class MemoryGateway:
    """A `Gateway` whose routes, weights and traffic live in this object.

    Thread-safe: the controller calls it from worker threads while a test records traffic.

    Attributes:
        history: every accepted `apply`, in order, as (route, weights); a `remove` appends
            (route, None). Tests read the steps a canary went through from it.
        refusing: when set, `apply` and `remove` raise `GatewayError` with this message (a
            data plane rejecting its config), and the previous config stays applied.
        stopped: whether `stop` was called.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[RouteSpec, dict[str, int]]] = {}
        self._served: dict[str, list[Served]] = {}
        self.history: list[tuple[str, dict[str, int] | None]] = []
        self.refusing: str | None = None
        self.stopped = False

    # -- the Gateway protocol ----------------------------------------------------------------

    def apply(self, route: str, spec: RouteSpec, weights: Mapping[str, int]) -> None:
        """Serve `route` as `spec` with `weights`, refused as nginx would refuse them.

        Raises:
            GatewayError: bad weights (see `check_weights`), or `refusing` is set.
        """
        full = check_weights(route, spec, weights)
        with self._lock:
            if self.refusing is not None:
                raise GatewayError(f"route {route!r}: {self.refusing}")
            self._routes[route] = (spec, full)
            self.history.append((route, dict(full)))

    def remove(self, route: str) -> None:
        """Stop serving `route`; what it served is forgotten (refused as `apply` is)."""
        with self._lock:
            if self.refusing is not None:
                raise GatewayError(f"route {route!r}: {self.refusing}")
            self._routes.pop(route, None)
            self._served.pop(route, None)
            self.history.append((route, None))

    def routes(self) -> list[str]:
        """The routes applied and not removed."""
        with self._lock:
            return sorted(self._routes)

    def weights(self, route: str) -> dict[str, int] | None:
        """The weights applied to `route`, or None when it is not applied."""
        with self._lock:
            applied = self._routes.get(route)
            return dict(applied[1]) if applied is not None else None

    def metrics(self, route: str, since: datetime) -> dict[str, GroupMetrics]:
        """Per group of `route`: the traffic recorded from `since` on (naive means UTC).

        Every group of the applied route appears, also one that served nothing, as the nginx
        adapter reports them.
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        with self._lock:
            applied = self._routes.get(route)
            groups = list(applied[1]) if applied is not None else []
            served = [s for s in self._served.get(route, []) if s.at >= since]
        metrics: dict[str, GroupMetrics] = {}
        for group in dict.fromkeys([*groups, *(s.group for s in served)]):
            mine = [s for s in served if s.group == group]
            latencies = [latency for s in mine for latency in s.latencies_ms]
            metrics[group] = GroupMetrics.from_samples(sum(s.errors for s in mine), latencies)
        return metrics

    def stop(self) -> None:
        """Nothing runs; records that the server stopped its data plane."""
        self.stopped = True

    def revive(self) -> int | None:
        """Nothing runs, so nothing is ever gone."""
        return None

    # -- for tests ---------------------------------------------------------------------------

    def record(
        self,
        route: str,
        group: str,
        at: datetime,
        latencies_ms: Iterable[float],
        errors: int = 0,
    ) -> None:
        """Record that `group` of `route` served one request per latency at `at`.

        Args:
            route: the route's name.
            group: the traffic group that served them.
            at: when (timezone-aware; naive means UTC).
            latencies_ms: one latency per request.
            errors: how many of those requests were 5xx.

        Raises:
            ValueError: more errors than requests.
        """
        served = Served(at if at.tzinfo else at.replace(tzinfo=UTC), group, tuple(latencies_ms))
        if not 0 <= errors <= len(served.latencies_ms):
            raise ValueError(f"errors ({errors}) must be 0-{len(served.latencies_ms)} requests")
        with self._lock:
            self._served.setdefault(route, []).append(
                Served(served.at, group, served.latencies_ms, errors)
            )


def _satisfies_protocol(gateway: MemoryGateway) -> Gateway:
    """Never called: mypy checks here that `MemoryGateway` still implements `Gateway`."""
    return gateway
