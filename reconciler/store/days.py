"""The per-day tier: one row per canary, region, check and finished UTC day.

A year of raw results (or of the site's 15-minute rollups) is too much to read for one
figure, so every finished day is summarised once into `result_days`:

    parent, region, check_name, day (days since the epoch), runs, passes, degraded, retried,
    p95, bins, counts

`runs`, `passes`, `degraded` and `retried` follow `core/outcomes.py` (degraded is up,
maintenance runs are left out); `p95` is the exact p95 of the day's durations (every run);
`bins`/`counts` are the day's latency histogram in the sketch's bins (`core/sketch.py`,
within 2%), as two lists of the same length, bins ascending. Sums of days are exact, so
uptime over any whole days is exact; quantiles over many days are read off the merged
histograms.

Who writes it:

* `fill` computes every finished day the tier lacks (the days from the watermark
  `days_until` to yesterday, or all of them the first time: a state file that already has
  archived days is backfilled once, a day per transaction, with progress) and the days that
  got late rows since the last run (watermark `days_received`). The site builder runs it
  before each refresh, `store/archive.py` before it moves days.
* `store/archive.py` recomputes a day in the transaction that moves it, from the rows it
  moves and the day's earlier files, so the tier and the history never disagree.

Readers take `relation`: the tier's rows for the days it holds, and the same rows computed
from raw results for the days it does not (yet) hold, so a figure never depends on whether
the tier is up to date, only its cost does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reconciler.core.outcomes import SQL_DEGRADED, SQL_PASSES, SQL_RETRIED, SQL_RUNS
from reconciler.core.sketch import BIN_SQL
from reconciler.store.archive import DAY_SECONDS, source
from reconciler.store.db import Connection, transaction
from reconciler.store.results import newest_received

TABLE = "result_days"
DAY_COLUMNS = "parent, region, check_name, day, runs, passes, degraded, retried, p95, bins, counts"
# Every day before this (days since the epoch) is in the tier, or had no results.
DAYS_UNTIL = "days_until"
# Results received up to this (µs since the epoch) are counted in the tier's days.
DAYS_RECEIVED = "days_received"
_US = 1_000_000
_DAY_SQL = f"CAST(epoch_us(started_at) // {DAY_SECONDS * _US} AS INTEGER)"


def _at(day: int) -> datetime:
    return datetime.fromtimestamp(day * DAY_SECONDS, UTC)


def day_select(relation: str, where: str) -> str:
    """SQL computing tier rows (DAY_COLUMNS) from the results of `relation` matching `where`."""
    return f"""WITH raw AS MATERIALIZED (
                   SELECT parent, region, check_name, {_DAY_SQL} AS day, {BIN_SQL} AS bin,
                          duration_ms, status, maintenance, retries
                   FROM {relation} WHERE {where}),
               binned AS (
                   SELECT parent, region, check_name, day, bin, count(*) AS n,
                          {SQL_RUNS} AS runs, {SQL_PASSES} AS passes,
                          {SQL_DEGRADED} AS degraded, {SQL_RETRIED} AS retried
                   FROM raw GROUP BY parent, region, check_name, day, bin),
               exact AS (
                   SELECT parent, region, check_name, day,
                          quantile_cont(duration_ms, 0.95) AS p95
                   FROM raw GROUP BY parent, region, check_name, day)
               SELECT {DAY_COLUMNS}
               FROM (SELECT parent, region, check_name, day, sum(runs)::BIGINT AS runs,
                            sum(passes)::BIGINT AS passes, sum(degraded)::BIGINT AS degraded,
                            sum(retried)::BIGINT AS retried,
                            list(bin ORDER BY bin) AS bins, list(n ORDER BY bin) AS counts
                     FROM binned GROUP BY parent, region, check_name, day)
               JOIN exact USING (parent, region, check_name, day)"""


def _meta(connection: Connection, key: str) -> int | None:
    row = connection.execute("SELECT value FROM meta WHERE key = $key", {"key": key}).fetchone()
    return int(row[0]) if row else None


def _set_meta(connection: Connection, key: str, value: int) -> None:
    connection.execute("DELETE FROM meta WHERE key = $key", {"key": key})
    connection.execute("INSERT INTO meta VALUES ($key, $value)", {"key": key, "value": str(value)})


def until(connection: Connection) -> int:
    """The tier's watermark: every day before it is in the tier (0: none is)."""
    return _meta(connection, DAYS_UNTIL) or 0


def held(connection: Connection) -> int:
    """`until`, or 0 when the state file has no tier table (opened read-only, older)."""
    return until(connection) if _has_tier(connection) else 0


def compute(connection: Connection, day: int, relation: str | None = None) -> int:
    """(Re)write one day's tier rows (in the caller's transaction, if any); returns how many.

    Args:
        connection: a writing connection.
        day: the day (since the epoch, UTC).
        relation: where the day's results are (default: live rows and the day's files).
    """
    low, high = _at(day), _at(day + 1)
    relation = relation or source(connection, low, high)
    connection.execute(f"DELETE FROM {TABLE} WHERE day = $day", {"day": day})
    row = connection.execute(
        f"INSERT INTO {TABLE} ({DAY_COLUMNS}) "
        + day_select(relation, "started_at >= $lo AND started_at < $hi"),
        {"lo": low, "hi": high},
    ).fetchone()
    return int(row[0]) if row else 0


def pending(connection: Connection, now: datetime) -> tuple[list[int], list[int]]:
    """The finished days (before `now`'s UTC day) to write: those the tier lacks (new, from
    its watermark on) and those that got late rows since it last counted them (late, before
    the watermark), each oldest first."""
    today = int(now.timestamp()) // DAY_SECONDS
    known = _meta(connection, DAYS_UNTIL)
    if known is None:
        # The first day with results, live or archived (the file list, not the files).
        first = connection.execute(
            f"""SELECT least((SELECT min({_DAY_SQL}) FROM results),
                             (SELECT min(epoch(day)::BIGINT // {DAY_SECONDS})::INTEGER
                              FROM archive_files))"""
        ).fetchone()
        known = first[0] if first and first[0] is not None else today
    late: list[int] = []
    received = _meta(connection, DAYS_RECEIVED)
    if received is not None:
        rows = connection.execute(
            f"""SELECT DISTINCT {_DAY_SQL} FROM results
                WHERE received_at > $received AND started_at < $known""",
            {"received": datetime.fromtimestamp(received / _US, UTC), "known": _at(known)},
        ).fetchall()
        late = sorted(row[0] for row in rows)
    return list(range(known, today)), late


def fill(
    connection: Connection,
    now: datetime,
    progress: Callable[[str], None] = lambda _: None,
    most: int | None = None,
    *,
    new: bool = True,
    late: bool = True,
) -> list[int]:
    """Bring the tier up to date: the pending days, one transaction each, oldest first (call
    outside any transaction). Returns the days written.

    In the common case a day's first refresh writes yesterday and nothing else; the first
    time it meets a state file with results, every day is written (a backfill, each day
    reported through `progress`). `most` caps the days written in one call (a server spreads
    a backfill over its builds).

    `new` and `late` choose the days: those the tier lacks, which move its watermark
    (`until`) to the first day left unwritten, and those late rows changed, which move the
    late rows' watermark once none is left. A server writes the late ones in its builds
    (their windows are computed again from them) and the new ones between builds.
    """
    counted = _meta(connection, DAYS_RECEIVED)
    newest = newest_received(connection, counted) or counted
    fresh, changed = pending(connection, now)
    today = int(now.timestamp()) // DAY_SECONDS
    known = _meta(connection, DAYS_UNTIL)
    chosen = sorted((fresh if new else []) + (changed if late else []))
    todo = chosen if most is None else chosen[:most]
    for index, day in enumerate(todo):
        with transaction(connection):
            rows = compute(connection, day)
        if known is None or day >= known:
            progress(f"per-day tier: {_at(day).date()} ({index + 1}/{len(chosen)}), {rows:,} rows")
    left = chosen[len(todo) :]
    values: dict[str, int] = {}
    if new:
        # Late days come first (they are before the watermark): a backlog of them stops it.
        if not left:
            values[DAYS_UNTIL] = max(today, until(connection))
        elif left[0] in fresh:
            values[DAYS_UNTIL] = left[0]
    if late and newest is not None and not any(day in changed for day in left):
        # Every late day is written: what was received up to `newest` is counted (the
        # tier's new days, written or not, are counted whole when they are written).
        values[DAYS_RECEIVED] = newest
    if not todo and all(_meta(connection, key) == value for key, value in values.items()):
        return todo  # nothing new: no commit (builds run every minute)
    with transaction(connection):
        for key, value in values.items():
            _set_meta(connection, key, value)
    return todo


def ensure(connection: Connection, day: int) -> None:
    """Make one day's tier rows count every result of the day (in the caller's transaction):
    recomputed when the tier does not hold the day yet or results arrived for it since the
    tier last counted (`store/archive.py` calls it before it moves the day)."""
    received = _meta(connection, DAYS_RECEIVED)
    if day < until(connection) and received is not None:
        late = connection.execute(
            """SELECT count(*) FROM results
               WHERE started_at >= $lo AND started_at < $hi AND received_at > $received""",
            {
                "lo": _at(day),
                "hi": _at(day + 1),
                "received": datetime.fromtimestamp(received / _US, UTC),
            },
        ).fetchone()
        if not late or not late[0]:
            return
    compute(connection, day)


def _has_tier(connection: Connection) -> bool:
    """Whether the state file has the tier's table (a file opened read-only may predate it)."""
    row = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t AND schema_name = 'main'",
        {"t": TABLE},
    ).fetchone()
    return bool(row and row[0])


def relation(
    connection: Connection, first: int, last: int, parent: str | None = None
) -> tuple[str, dict[str, Any]]:
    """SQL (and its parameters) for the tier rows of the days [first, last): stored ones
    for the days the tier holds, computed from raw results for the rest.

    Args:
        connection: a state file connection or cursor.
        first: the first day (since the epoch).
        last: the day after the last.
        parent: only this canary's rows (None: every canary's).
    """
    held = min(max(until(connection), first), last) if _has_tier(connection) else first
    keep = "($tier_parent::VARCHAR IS NULL OR parent = $tier_parent)"
    parts = []
    # DuckDB refuses parameters a statement does not use: only those of the parts present.
    parameters: dict[str, Any] = {"tier_parent": parent}
    if held > first:
        parts.append(
            f"""SELECT {DAY_COLUMNS} FROM {TABLE}
                WHERE day >= $tier_first AND day < $tier_held AND {keep}"""
        )
        parameters.update({"tier_first": first, "tier_held": held})
    if held < last:
        raw = source(connection, _at(held), _at(last))
        parts.append(
            "SELECT * FROM ("
            + day_select(raw, f"started_at >= $tier_lo AND started_at < $tier_hi AND {keep}")
            + ")"
        )
        parameters.update({"tier_lo": _at(held), "tier_hi": _at(last)})
    if not parts:
        parts.append(f"SELECT {DAY_COLUMNS} FROM {TABLE} WHERE {keep} AND false")
    return "(" + " UNION ALL ".join(parts) + ")", parameters
