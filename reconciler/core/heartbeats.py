"""Heartbeat checks' decisions (pure): which deadlines a heartbeat missed, and the result rows
a ping or a missed deadline becomes.

A heartbeat expects its first ping within `period + grace` of the later of its last ping and
its token's minting, then one every `period`: each deadline that passes without a ping is a
failed run, stored at the deadline. Deadlines are computed, never remembered, so storing one
twice (after a restart) is a duplicate row that ingest ignores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.resources import Resource
from reconciler.core.selector import LOCAL
from schemas.canary import HEARTBEAT
from schemas.checks import NEVER
from schemas.durations import format_duration, parse_duration
from schemas.heartbeat import DEFAULT_GRACE

Key = tuple[str, str]  # (canary `namespace/name`, check name)

# Missed deadlines stored by one evaluation of one heartbeat: after a long outage of the
# control plane the newest ones are enough for the incidents, the others are counted.
MAX_MISSED_ROWS = 100


@dataclass(frozen=True)
class HeartbeatTarget:
    """One heartbeat check of the served revision.

    Attributes:
        key: its canary (`namespace/name`) and check name.
        derived: the derived canary its rows belong to (`namespace/name@local`).
        period: seconds between the pings it expects.
        grace: seconds a ping may be late.
    """

    key: Key
    derived: str
    period: float
    grace: float


def heartbeat_targets(resources: Iterable[Resource]) -> dict[Key, HeartbeatTarget]:
    """The heartbeats of the served revision: the control plane's derived canaries' checks."""
    targets = {}
    for resource in resources:
        if resource.kind != "DerivedCanary" or resource.agent != LOCAL:
            continue
        if resource.spec.get("schedule") == NEVER:  # paused (`replicas: 0`): nothing is due
            continue
        for check in resource.spec.get(HEARTBEAT, []):
            key = (resource.parent or "", str(check["name"]))
            targets[key] = HeartbeatTarget(
                key,
                resource.name,
                parse_duration(check["period"]),
                parse_duration(check.get("grace", DEFAULT_GRACE)),
            )
    return targets


@dataclass(frozen=True)
class Missed:
    """The deadlines one evaluation stores, and how many older ones it leaves out."""

    deadlines: tuple[datetime, ...]
    skipped: int = 0


def missed_deadlines(
    target: HeartbeatTarget,
    since: datetime,
    now: datetime,
    after: datetime | None = None,
    oldest: datetime | None = None,
    limit: int = MAX_MISSED_ROWS,
) -> Missed:
    """The deadlines a heartbeat missed up to `now`.

    Args:
        target: the heartbeat.
        since: its last ping, or when its token was minted if it never pinged.
        now: the evaluation time.
        after: deadlines up to this one were stored already (None: none known).
        oldest: deadlines before this are not stored (ingest refuses rows that old).
        limit: at most this many deadlines, the newest; the rest are counted as skipped.

    Returns:
        The deadlines to store, oldest first, and how many were left out for `limit`.
    """
    first = since + timedelta(seconds=target.period + target.grace)
    if now < first:
        return Missed(())
    period = timedelta(seconds=target.period)
    last = math.floor((now - first) / period)  # index of the newest deadline passed
    start = 0
    if after is not None and after >= first:
        start = max(start, math.floor((after - first) / period) + 1)  # strictly after
    if oldest is not None and oldest >= first:
        start = max(start, math.ceil((oldest - first) / period))  # at or after
    if start > last:
        return Missed(())
    skipped = max(0, last - start + 1 - limit)
    start += skipped
    return Missed(tuple(first + period * k for k in range(start, last + 1)), skipped)


def ping_row(
    target: HeartbeatTarget,
    at: datetime,
    failed: bool,
    message: str | None,
    duration_ms: float = 0.0,
) -> dict[str, Any]:
    """The result row a ping stores (wire format, as an agent would post it)."""
    return {
        "canary": target.derived,
        "check": target.key[1],
        "started_at": at.isoformat(),
        "duration_ms": round(duration_ms, 3),
        "status": "fail" if failed else "pass",
        "message": message,
    }


def missed_row(target: HeartbeatTarget, deadline: datetime, since: datetime) -> dict[str, Any]:
    """The failed row a missed deadline stores, saying since when nothing came."""
    return {
        "canary": target.derived,
        "check": target.key[1],
        "started_at": deadline.isoformat(),
        "duration_ms": 0.0,
        "status": "fail",
        "message": f"no ping since {since.isoformat()} (expected every "
        f"{format_duration(target.period)}, grace {format_duration(target.grace)})",
    }
