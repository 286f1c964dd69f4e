"""Check results in the state file: idempotent bulk inserts through one writer.

A row's identity is (agent, derived canary, check, started_at): a re-sent row is a
duplicate, whichever batch it comes in, and is stored once. Looking every incoming row up
in the table costs a scan of every row stored over the same minutes, which grows with the
ingest rate; so the server's writer keeps `RecentKeys`, the hashes of every row it stored
recently, and only rows whose hash it has seen (a re-send, or a hash collision) or that
started before its horizon (an agent's spool replayed after an outage) are looked up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

import pyarrow as pa

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import Connection


@dataclass(frozen=True)
class IngestBatch:
    """Accepted rows of one request, with the agent and region its token names."""

    batch: int
    agent: str
    region: str
    rows: AcceptedRows


_UTC_MICROS = pa.timestamp("us", tz="UTC")

_COLUMNS = (
    "agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status, "
    "code, message, phases::JSON, $now, retries, maintenance"
)


@dataclass
class RecentKeys:
    """The hashes of every row stored with `started_at` at or after `horizon`.

    A hash not in the set is a row never stored (the set holds all of them since the
    horizon); a hash in it may be a duplicate, and the table decides. Kept per minute of
    `started_at` so the oldest minutes are forgotten as time passes or as the set reaches
    `max_keys`; forgetting only raises the horizon, it never makes an answer wrong.

    Attributes:
        span: how far back from now the set reaches.
        max_keys: the most hashes kept (about 70 bytes each: 1M is ~70 MB).
    """

    span: timedelta = timedelta(minutes=10)
    max_keys: int = 1_000_000
    horizon: datetime | None = None  # None until loaded from the table
    _minutes: dict[int, set[int]] = field(default_factory=dict)
    _order: deque[int] = field(default_factory=deque)
    _size: int = 0

    def load(self, connection: Connection, now: datetime) -> None:
        """Fill the set from the rows stored since `now - span`."""
        self._minutes.clear()
        self._order.clear()
        self._size = 0
        self.horizon = _minute_start(now - self.span)
        rows = connection.execute(
            """SELECT agent, canary, check_name, started_at FROM results
               WHERE started_at >= $horizon ORDER BY started_at""",
            {"horizon": self.horizon},
        ).fetchall()
        for agent, canary, check, started in rows:
            self._add(_minute(started), hash((agent, canary, check, started)))
        self._trim()

    def advance(self, now: datetime) -> None:
        """Forget the minutes older than `now - span`."""
        horizon = _minute_start(now - self.span)
        if self.horizon is None or horizon <= self.horizon:
            return
        limit = _minute(horizon)
        while self._order and self._order[0] < limit:
            self._size -= len(self._minutes.pop(self._order.popleft()))
        self.horizon = horizon

    def __contains__(self, key: tuple[int, int]) -> bool:
        minute, digest = key
        hashes = self._minutes.get(minute)
        return hashes is not None and digest in hashes

    def add(self, keys: list[tuple[int, int]]) -> None:
        """Remember stored rows (after their transaction committed)."""
        for minute, digest in keys:
            self._add(minute, digest)
        self._trim()

    def _add(self, minute: int, digest: int) -> None:
        hashes = self._minutes.get(minute)
        if hashes is None:
            hashes = self._minutes[minute] = set()
            if self._order and minute < self._order[-1]:
                # A late minute: keep the order sorted (rare; the deque is short).
                self._order = deque(sorted([*self._order, minute]))
            else:
                self._order.append(minute)
        if digest not in hashes:
            hashes.add(digest)
            self._size += 1

    def _trim(self) -> None:
        while self._size > self.max_keys and len(self._order) > 1:
            oldest = self._order.popleft()
            self._size -= len(self._minutes.pop(oldest))
            self.horizon = datetime.fromtimestamp((oldest + 1) * 60, UTC)


def _minute(started: datetime) -> int:
    return int(started.timestamp()) // 60


def _minute_start(moment: datetime) -> datetime:
    return datetime.fromtimestamp(_minute(moment) * 60, UTC)


def _table(batches: list[IngestBatch]) -> pa.Table:
    def column(name: str) -> list[object]:
        return [value for b in batches for value in getattr(b.rows, name)]

    return pa.table(
        {
            "batch": pa.array([b.batch for b in batches for _ in range(len(b.rows))], pa.int64()),
            "agent": [b.agent for b in batches for _ in range(len(b.rows))],
            "region": [b.region for b in batches for _ in range(len(b.rows))],
            "canary": column("canary"),
            "parent": column("parent"),
            "check_name": column("check_name"),
            "check_type": column("check_type"),
            "started_at": pa.array(column("started_at"), _UTC_MICROS),
            "duration_ms": pa.array(column("duration_ms"), pa.float64()),
            "status": column("status"),
            "retries": pa.array(column("retries"), pa.int16()),
            "maintenance": pa.array(column("maintenance"), pa.bool_()),
            "code": pa.array(column("code"), pa.int32()),
            "message": pa.array(column("message"), pa.string()),
            "phases": pa.array(column("phases"), pa.string()),
        }
    )


@dataclass
class _Split:
    """An insert's rows: those surely new, and those the table must check."""

    new: list[IngestBatch] = field(default_factory=list)
    new_keys: list[tuple[int, int]] = field(default_factory=list)
    check: list[IngestBatch] = field(default_factory=list)


def _split(batches: list[IngestBatch], recent: RecentKeys) -> _Split:
    assert recent.horizon is not None
    horizon = recent.horizon
    split = _Split()
    seen: set[tuple[int, int]] = set()
    # The horizon in each row offset: same-tzinfo datetimes compare field by field.
    horizons: dict[tzinfo | None, datetime] = {}
    for b in batches:
        rows, agent = b.rows, b.agent
        new, check = [], []
        for i, (canary, name, started) in enumerate(
            zip(rows.canary, rows.check_name, rows.started_at, strict=True)
        ):
            zone = started.tzinfo
            edge = horizons.get(zone)
            if edge is None:
                edge = horizons[zone] = horizon.astimezone(zone) if zone else horizon
            if started < edge:
                check.append(i)
                continue
            key = (int(started.timestamp()) // 60, hash((agent, canary, name, started)))
            if key in recent or key in seen:
                check.append(i)
            else:
                seen.add(key)
                split.new_keys.append(key)
                new.append(i)
        if len(new) == len(rows):
            split.new.append(b)
            continue
        if new:
            split.new.append(IngestBatch(b.batch, agent, b.region, rows.take(new)))
        split.check.append(IngestBatch(b.batch, agent, b.region, rows.take(check)))
    return split


def insert_results(
    connection: Connection,
    batches: list[IngestBatch],
    now: datetime,
    recent: RecentKeys | None = None,
) -> dict[int, int]:
    """Insert the rows of several requests at once, skipping rows already stored.

    Args:
        connection: the writing connection, outside a transaction.
        batches: the requests' rows.
        now: the server's clock (`received_at`).
        recent: the writer's memory of recently stored rows (loaded on first use); without
            it every row is looked up in the table.

    Returns:
        The number of rows inserted for each batch id; the rest were duplicates.
    """
    counts = {b.batch: 0 for b in batches}
    if not any(len(b.rows) for b in batches):
        return counts
    if recent is None:
        split = _Split(check=batches)
    else:
        if recent.horizon is None:
            recent.load(connection, now)
        recent.advance(now)
        split = _split(batches, recent)
    connection.execute("BEGIN TRANSACTION")
    try:
        if split.new:
            _insert_new(connection, split.new, now)
            for b in split.new:
                counts[b.batch] += len(b.rows)
        if any(len(b.rows) for b in split.check):
            for batch, stored in _insert_checked(connection, split.check, now).items():
                counts[batch] += stored
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    if recent is not None:
        recent.add(split.new_keys)
    return counts


def _insert_new(connection: Connection, batches: list[IngestBatch], now: datetime) -> None:
    connection.register("new_results", _table(batches))
    try:
        connection.execute(f"INSERT INTO results SELECT {_COLUMNS} FROM new_results", {"now": now})
    finally:
        connection.unregister("new_results")


def _insert_checked(
    connection: Connection, batches: list[IngestBatch], now: datetime
) -> dict[int, int]:
    """Insert the rows not yet in the table (nor twice among themselves); counts per batch."""
    # Constants, not subqueries: DuckDB skips the stored row groups outside them (zone maps).
    earliest = min(min(b.rows.started_at) for b in batches if len(b.rows))
    latest = max(max(b.rows.started_at) for b in batches if len(b.rows))
    connection.register("incoming_results", _table(batches))
    try:
        connection.execute(
            """CREATE OR REPLACE TEMP TABLE fresh_results AS
               SELECT * EXCLUDE (seen) FROM (
                   SELECT *, row_number() OVER (
                       PARTITION BY agent, canary, check_name, started_at ORDER BY batch
                   ) AS seen
                   FROM incoming_results
               ) i
               WHERE seen = 1 AND NOT EXISTS (
                   SELECT 1 FROM results r
                   WHERE r.started_at BETWEEN $earliest AND $latest
                     AND r.agent = i.agent AND r.canary = i.canary
                     AND r.check_name = i.check_name AND r.started_at = i.started_at
               )""",
            {"earliest": earliest, "latest": latest},
        )
        connection.execute(
            f"INSERT INTO results SELECT {_COLUMNS} FROM fresh_results", {"now": now}
        )
        counts = dict(
            connection.execute(
                "SELECT batch, count(*) FROM fresh_results GROUP BY batch"
            ).fetchall()
        )
        connection.execute("DROP TABLE fresh_results")
    finally:
        connection.unregister("incoming_results")
    return {batch: int(count) for batch, count in counts.items()}


def results_per_agent(connection: Connection, since: datetime) -> dict[str, int]:
    """How many rows each agent stored since a time."""
    rows = connection.execute(
        "SELECT agent, count(*) FROM results WHERE started_at >= ? GROUP BY agent", [since]
    ).fetchall()
    return {agent: int(count) for agent, count in rows}
