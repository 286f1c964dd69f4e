"""Parsing the gateway's JSON access log into per-group metrics; no I/O, no clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from reconciler.gateway.base import GroupMetrics


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One logged response of a route.

    Attributes:
        time_ms: when the response ended, milliseconds since the epoch (nginx's `$msec`).
        route: the route that matched.
        group: the traffic group the request was sent to.
        status: the HTTP status sent to the client.
        latency_ms: the total request time as the client saw it (`$request_time`), in ms.
    """

    time_ms: int
    route: str
    group: str
    status: int
    latency_ms: float


def parse_line(line: bytes | str) -> LogEntry | None:
    """Parse one access-log line; None for blank, malformed or route-less lines."""
    try:
        record = orjson.loads(line)
        route, group = record["route"], record["group"]
        time_ms = round(float(record["time"]) * 1000)
        status = int(record["status"])
        latency_ms = float(record["request_time"]) * 1000
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(route, str) or not isinstance(group, str) or not route or not group:
        return None
    return LogEntry(time_ms, route, group, status, latency_ms)


def aggregate(
    entries: Iterable[LogEntry], route: str, since_ms: int, groups: Iterable[str] = ()
) -> dict[str, GroupMetrics]:
    """Per group of `route`: requests, 5xx errors and latencies of the entries from `since_ms`.

    Args:
        entries: log entries of any routes, in any order.
        route: the route to report on.
        since_ms: the window's start, milliseconds since the epoch, inclusive.
        groups: groups to report even when they served nothing (as zero requests).

    Returns:
        Group name to its metrics.
    """
    latencies: defaultdict[str, list[float]] = defaultdict(list)
    errors: defaultdict[str, int] = defaultdict(int)
    for name in groups:
        latencies.setdefault(name, [])
    for entry in entries:
        if entry.route != route or entry.time_ms < since_ms:
            continue
        latencies[entry.group].append(entry.latency_ms)
        if entry.status >= 500:
            errors[entry.group] += 1
    return {
        name: GroupMetrics.from_samples(errors[name], samples)
        for name, samples in latencies.items()
    }
