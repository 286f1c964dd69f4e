"""Check results in the state file: idempotent bulk inserts through one writer.

A row's identity is (agent, derived canary, check, started_at): a re-sent row is a
duplicate, whichever batch it comes in, and is stored once. Looking every incoming row up
in the table costs a scan of every row stored over the same minutes, which grows with the
ingest rate; so the server's writer keeps `RecentKeys`, the keys of every row it stored
recently, and only rows whose key it has seen (a re-send) or that started before its horizon
(an agent's spool replayed after an outage) are looked up. Keys are made for whole columns
at once, and a group of rows none of which was seen is let through by one set operation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import Connection, transaction


@dataclass(frozen=True)
class IngestBatch:
    """Accepted rows of one request, with the agent and region its token names."""

    batch: int
    agent: str
    region: str
    rows: AcceptedRows


_COLUMNS = (
    "agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status, "
    "code, message, phases::JSON, $now, retries, maintenance"
)

_MICROS_PER_MINUTE = 60_000_000
# A key: the identity's number above the low 40 bits of `started_at` in µs (12.7 days).
# Keys are kept per minute, so two keys of one minute differ exactly when the rows differ.
_TIME_BITS = 40
_TIME_MASK = (1 << _TIME_BITS) - 1

Keys = tuple[pa.Array, pa.Array]  # each row's minute and key (int64)


@dataclass
class RecentKeys:
    """The keys of every row stored with `started_at` at or after `horizon`.

    A key not in the set is a row never stored (the set holds all of them since the
    horizon); a key in it is a duplicate. Kept per minute of `started_at` so the oldest
    minutes are forgotten as time passes or as the set reaches `max_keys`; forgetting only
    raises the horizon, it never makes an answer wrong.

    Attributes:
        span: how far back from now the set reaches.
        max_keys: the most keys kept (about 50 bytes each: 1M is ~50 MB); at most twice as
            many (agent, canary, check) identities are numbered.
    """

    span: timedelta = timedelta(minutes=10)
    max_keys: int = 1_000_000
    horizon: datetime | None = None  # None until loaded from the table
    _minutes: dict[int, set[int]] = field(default_factory=dict)
    _order: deque[int] = field(default_factory=deque)
    _size: int = 0
    # "agent\x00canary\x00check" -> its number in keys
    _identities: dict[str, int] = field(default_factory=dict)

    def load(self, connection: Connection, now: datetime) -> None:
        """Fill the set from the rows stored since `now - span`."""
        self._minutes.clear()
        self._order.clear()
        self._size = 0
        self._identities.clear()
        self.horizon = _minute_start(now - self.span)
        stored = connection.sql(
            """SELECT agent, canary, check_name, started_at FROM results
               WHERE started_at >= $horizon""",
            params={"horizon": self.horizon},
        ).to_arrow_table()
        self.add(self.keys(stored))

    def advance(self, now: datetime) -> None:
        """Forget the minutes older than `now - span`."""
        if len(self._identities) > 2 * self.max_keys:
            # Identities seen long ago (configs since replaced) are still numbered: start
            # again from the table, which numbers only the recent ones. This also keeps the
            # numbers below 2**23, and so the keys below 2**63.
            self.horizon = None
        horizon = _minute_start(now - self.span)
        if self.horizon is None or horizon <= self.horizon:
            return
        limit = _minute(horizon)
        while self._order and self._order[0] < limit:
            self._size -= len(self._minutes.pop(self._order.popleft()))
        self.horizon = horizon

    def keys(self, rows: pa.Table) -> Keys:
        """Each row's minute and key, from its agent, canary, check_name and started_at."""
        identity = pc.binary_join_element_wise(
            rows["agent"], rows["canary"], rows["check_name"], "\x00"
        )
        encoded = pc.dictionary_encode(identity.combine_chunks())
        numbers = self._identities
        number_of = pa.array(
            [numbers.setdefault(name, len(numbers)) for name in encoded.dictionary.to_pylist()],
            pa.int64(),
        )
        micros = rows["started_at"].combine_chunks().cast(pa.int64())
        keys = pc.bit_wise_or(
            pc.shift_left(pc.take(number_of, encoded.indices), _TIME_BITS),
            pc.bit_wise_and(micros, _TIME_MASK),
        )
        return pc.divide(micros, _MICROS_PER_MINUTE), keys

    def seen(self, minute: int) -> set[int] | None:
        """The keys stored for one minute, if any."""
        return self._minutes.get(minute)

    def add(self, keys: Keys) -> None:
        """Remember stored rows (after their transaction committed)."""
        minutes, values = keys
        for minute in pc.unique(minutes).to_pylist():
            self._add(minute, values.filter(pc.equal(minutes, minute)).to_pylist())
        self._trim()

    def _add(self, minute: int, keys: list[int]) -> None:
        known = self._minutes.get(minute)
        if known is None:
            known = self._minutes[minute] = set()
            if self._order and minute < self._order[-1]:
                # A late minute: keep the order sorted (rare; the deque is short).
                self._order = deque(sorted([*self._order, minute]))
            else:
                self._order.append(minute)
        before = len(known)
        known.update(keys)
        self._size += len(known) - before

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
    """The batches' rows as one table, each with its batch id, agent and region."""
    parts = []
    for b in batches:
        count = len(b.rows)
        parts.append(
            b.rows.table.add_column(0, "batch", pa.repeat(pa.scalar(b.batch, pa.int64()), count))
            .add_column(1, "agent", pa.repeat(pa.scalar(b.agent, pa.string()), count))
            .add_column(2, "region", pa.repeat(pa.scalar(b.region, pa.string()), count))
        )
    return pa.concat_tables(parts)


@dataclass
class _Split:
    """An insert's rows: those surely new (with their keys), and those the table must check."""

    new: pa.Table
    new_keys: Keys
    check: pa.Table


def _split(rows: pa.Table, recent: RecentKeys) -> _Split:
    assert recent.horizon is not None
    minutes, keys = recent.keys(rows)
    new = pc.greater_equal(minutes, _minute(recent.horizon))
    repeated: list[int] = []
    for minute in pc.unique(minutes.filter(new)).to_pylist():
        at = pc.and_(new, pc.equal(minutes, minute))
        values = keys.filter(at).to_pylist()
        known = recent.seen(minute)
        distinct = set(values)
        if len(distinct) == len(values) and (known is None or known.isdisjoint(distinct)):
            continue
        # A re-send: the first of each key not stored yet is new, the rest are checked.
        firsts: set[int] = set()
        for index, key in zip(pc.indices_nonzero(at).to_pylist(), values, strict=True):
            if (known is not None and key in known) or key in firsts:
                repeated.append(index)
            else:
                firsts.add(key)
    if repeated:
        flags = new.to_pylist()
        for index in repeated:
            flags[index] = False
        new = pa.array(flags, pa.bool_())
    if new.false_count == 0:
        return _Split(rows, (minutes, keys), rows.slice(0, 0))
    return _Split(
        rows.filter(new), (minutes.filter(new), keys.filter(new)), rows.filter(pc.invert(new))
    )


def _per_batch(rows: pa.Table) -> dict[int, int]:
    counted = pc.value_counts(rows["batch"]).to_pylist()
    return {entry["values"]: entry["counts"] for entry in counted}


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
    filled = [b for b in batches if len(b.rows)]
    if not filled:
        return counts
    rows = _table(filled)
    if recent is None:
        split = _Split(rows.slice(0, 0), (pa.array([], pa.int64()),) * 2, rows)
    else:
        recent.advance(now)
        if recent.horizon is None:
            recent.load(connection, now)
        split = _split(rows, recent)
    with transaction(connection):
        if split.new.num_rows:
            _insert_new(connection, split.new, now)
            for batch, stored in _per_batch(split.new).items():
                counts[batch] += stored
        if split.check.num_rows:
            for batch, stored in _insert_checked(connection, split.check, now).items():
                counts[batch] += stored
    if recent is not None:
        recent.add(split.new_keys)
    return counts


def _insert_new(connection: Connection, rows: pa.Table, now: datetime) -> None:
    connection.register("new_results", rows)
    try:
        connection.execute(f"INSERT INTO results SELECT {_COLUMNS} FROM new_results", {"now": now})
    finally:
        connection.unregister("new_results")


def _insert_checked(connection: Connection, rows: pa.Table, now: datetime) -> dict[int, int]:
    """Insert the rows not yet in the table (nor twice among themselves); counts per batch."""
    # Constants, not subqueries: DuckDB skips the stored row groups outside them (zone maps).
    span = pc.min_max(rows["started_at"]).as_py()
    connection.register("incoming_results", rows)
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
            {"earliest": span["min"], "latest": span["max"]},
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


def newest_received(connection: Connection, after: int | None = None) -> int | None:
    """When the newest result was received (epoch µs), or None.

    Args:
        after: a time (epoch µs) known to be received already: only newer rows are looked at
            (rows are stored in the order they are received, so DuckDB's zone maps skip the
            rest; a scan of every row's `received_at` is 30 ms a build at 50 M rows). None
            is returned when there are none.
    """
    if after is None:
        row = connection.execute("SELECT epoch_us(max(received_at)) FROM results").fetchone()
    else:
        row = connection.execute(
            """SELECT epoch_us(max(received_at)) FROM results
               WHERE received_at > make_timestamptz($after)""",
            {"after": after},
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def results_per_region(connection: Connection, since: datetime) -> dict[str, int]:
    """How many rows each region stored since a time (the server's own `local` checks
    report in its region)."""
    rows = connection.execute(
        "SELECT region, count(*) FROM results WHERE started_at >= ? GROUP BY region", [since]
    ).fetchall()
    return {region: int(count) for region, count in rows}


def results_per_agent(connection: Connection, since: datetime) -> dict[str, int]:
    """How many rows each agent stored since a time."""
    rows = connection.execute(
        "SELECT agent, count(*) FROM results WHERE started_at >= ? GROUP BY agent", [since]
    ).fetchall()
    return {agent: int(count) for agent, count in rows}
