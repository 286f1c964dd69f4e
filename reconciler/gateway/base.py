"""The interface between the canary controller and a data plane, and the metrics it returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.route import RouteSpec


class GatewayError(Exception):
    """A data plane refused or failed an operation; the message says what to do about it."""


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile of ascending samples, interpolated linearly (as DuckDB's quantile_cont).

    Args:
        ordered: samples sorted ascending.
        q: the quantile, 0.0-1.0.

    Returns:
        The quantile, or None without samples.
    """
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """What one traffic group served over a window.

    Attributes:
        requests: responses sent.
        errors: responses with a 5xx status.
        p99_ms: 99th-percentile latency in milliseconds; None without samples.
        latencies_ms: the latency samples, ascending; empty when a data plane only pushes
            aggregates (then `p99_ms` is all there is).
    """

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    latencies_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, errors: int, latencies_ms: Iterable[float]) -> GroupMetrics:
        """Metrics of one request per latency sample, `errors` of which were 5xx."""
        ordered = tuple(sorted(latencies_ms))
        return cls(len(ordered), errors, quantile(ordered, 0.99), ordered)

    @property
    def error_rate(self) -> float:
        """Errors per request, 0.0 without requests."""
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """Another latency quantile from the samples (None when there are none)."""
        return quantile(self.latencies_ms, q)


class Gateway(Protocol):
    """A data plane that splits a route's traffic between groups and reports on each group."""

    def apply(self, route: str, spec: RouteSpec, weights: Mapping[str, int]) -> None:
        """Serve `route` as `spec` describes, with `weights` (percent per group, sum 100).

        Raises:
            GatewayError: the data plane rejected the configuration; the previous one serves.
        """
        ...

    def remove(self, route: str) -> None:
        """Stop serving `route` (it left the configuration)."""
        ...

    def weights(self, route: str) -> dict[str, int] | None:
        """The weights currently applied to `route`, or None when it is not applied."""
        ...

    def routes(self) -> list[str]:
        """The routes applied and not removed, by name (also those of an earlier process)."""
        ...

    def metrics(self, route: str, since: datetime) -> dict[str, GroupMetrics]:
        """Per group of `route`: what was served from `since` (timezone-aware) until now."""
        ...

    def stop(self) -> None:
        """Stop the data plane the server started (an external one is left running)."""
        ...

    def revive(self) -> int | None:
        """Start the data plane the server started again if it is gone (killed, crashed).

        Returns:
            Its new process id, or None when nothing was done (it runs, or is not the
            server's to run).

        Raises:
            GatewayError: it did not start again.
        """
        ...


def check_weights(route: str, spec: RouteSpec, weights: Mapping[str, int]) -> dict[str, int]:
    """Every group of the spec with its weight (missing groups get 0), in declaration order.

    Raises:
        GatewayError: no traffic_split, an unknown group, a weight outside 0-100, or a sum
            other than 100.
    """
    groups = [group.name for group in spec.traffic_split or []]
    if not groups:
        raise GatewayError(f"route {route!r} has no traffic_split: nothing to send traffic to")
    unknown = sorted(set(weights) - set(groups))
    if unknown:
        raise GatewayError(
            f"route {route!r}: weights name unknown group(s) {', '.join(unknown)} "
            f"(groups: {', '.join(groups)})"
        )
    full = {name: weights.get(name, 0) for name in groups}
    bad = {name: weight for name, weight in full.items() if not 0 <= weight <= 100}
    if bad:
        raise GatewayError(f"route {route!r}: weights must be 0-100, got {bad}")
    if sum(full.values()) != 100:
        raise GatewayError(
            f"route {route!r}: weights sum to {sum(full.values())}, they must sum to 100: {full}"
        )
    return full
