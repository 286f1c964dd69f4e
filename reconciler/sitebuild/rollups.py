"""Rollup tables the status site reads instead of raw results, maintained incrementally.

Tables (`tables.py`):

* `site_rollup`: per canary, region and 15-minute bucket: runs, passed runs and the bucket's
  exact p95 (`quantile_cont` over its rows). A window's uptime is a sum of buckets
  and its chart points are bucket p95s.
* `site_hist`: per canary, region and UTC day: latency histogram counts (see
  `sketch.py`); long-window quantiles add days up instead of sorting every raw row.
* `site_failures`: the runs of the last two days that did not pass (a few in a thousand):
  the pages' recent failures are read from it instead of from a day of raw rows.
* `site_meta`: the format version and the watermarks below.

A refresh touches little: rollup buckets from the cursor (the first bucket that was not
settled at the previous refresh) are recomputed from raw rows, a scan that zone maps keep to
the last minutes; histogram days are computed once, and today's counts grow by whole 2-hour
blocks, each added once. Late rows (received since the previous refresh, less an overlap,
but started before what is already summarised) get their buckets and days recomputed from
raw rows (`late.py`); when that changes a stored row, `Refresh.late_from` says from when, so
that the window tables are recomputed. `update` runs inside the builder's transaction; the
first fill (`backfill`) commits a day at a time and writes the watermarks last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.core.outcomes import SQL_DOWN
from reconciler.sitebuild.kept import days_token, new_token
from reconciler.sitebuild.late import OVERLAP_US, recompute_late
from reconciler.sitebuild.tables import (
    DDL,
    FAILURE_COLUMNS,
    FORMAT,
    HIST_COLUMNS,
    ROLLUP_COLUMNS,
    US,
    Tables,
    at,
    hist_select,
    read_meta,
    rollup_select,
    scalar,
    write_meta,
)
from reconciler.sitebuild.windows import (
    DAY,
    LONG_STEP,
    ROLLUP_STEP,
    ROLLUP_WINDOWS,
    SETTLE,
    floor_to,
)
from reconciler.store import days
from reconciler.store.archive import source
from reconciler.store.db import Connection, transaction
from reconciler.store.results import newest_received

# `site_failures` keeps the failed runs of this far back.
LATEST_HORIZON = 2 * DAY


@dataclass(frozen=True)
class Refresh:
    """What a refresh did.

    Attributes:
        late_from: the earliest time (s) whose stored figures late rows changed, or None.
    """

    late_from: int | None


def backfill(connection: Connection, tables: Tables, now: int) -> bool:
    """Compute the tables from scratch when they have never been (or were partly) filled.

    Runs outside any transaction: one autocommitted statement per day of results is about
    40% faster than one transaction holding them all. The watermarks are written last, so an
    interrupted backfill leaves none and the next build starts it over.

    Returns:
        Whether it ran.
    """
    if "cursor" in read_meta(connection, tables):
        return False
    for name in DDL:
        connection.execute(f"DELETE FROM {tables.named(name)}")
    long_end = floor_to(now - SETTLE, LONG_STEP)
    today = long_end // DAY
    # From scratch, back to the longest rollup window's first day (and one more): older rows,
    # live or archived (`store.archive`), are in no window. The rows of the horizon's days
    # may be in history files; `source` picks each day's own.
    horizon = at((today - max(window.days or 1 for window in ROLLUP_WINDOWS) - 1) * DAY)
    received = newest_received(connection)
    first, last = connection.execute(
        "SELECT epoch_us(min(started_at)), epoch_us(max(started_at)) FROM "
        + source(connection, horizon)
        + " WHERE started_at >= $horizon",
        {"horizon": horizon},
    ).fetchone() or (None, None)
    if first is not None:
        # A day at a time, each reading the files of its own day only.
        _rollup_range(connection, tables, floor_to(first // US, ROLLUP_STEP), last // US)
        for day in range(first // US // DAY, today):
            _hist_insert(connection, tables, day * DAY, (day + 1) * DAY)
        connection.execute(
            f"""INSERT INTO {tables.failures} SELECT {FAILURE_COLUMNS} FROM results
                WHERE started_at >= $since AND {SQL_DOWN}""",
            {"since": at(now - LATEST_HORIZON)},
        )
    with transaction(connection):
        write_meta(
            connection,
            tables,
            {
                "format": FORMAT,
                # Everything from the first bucket of the last row on is recomputed next.
                "cursor": str(floor_to(last // US, ROLLUP_STEP) if last else now),
                "hist_days": str(today),
                "hist_to": str(today * DAY),
                "received": str(received or 0),
                days_token(): new_token(),
            },
        )
    return True


def update(connection: Connection, tables: Tables, now: int) -> Refresh:
    """Bring the rollup and histogram tables up to date with the results table.

    Run it inside a transaction, after `ensure_tables` and `backfill`.

    Args:
        connection: a connection that may write `tables`.
        tables: where the site's tables are.
        now: the current time (s).
    """
    meta = read_meta(connection, tables)
    settled = floor_to(now - SETTLE, ROLLUP_STEP)
    long_end = floor_to(now - SETTLE, LONG_STEP)
    today = long_end // DAY
    cursor = int(meta["cursor"])
    hist_days, hist_to = int(meta["hist_days"]), int(meta["hist_to"])
    since = int(meta["received"]) - OVERLAP_US
    late_from = recompute_late(connection, tables, since, cursor, hist_to)
    _merge_failures(connection, tables, since, now)
    connection.execute(f"DELETE FROM {tables.rollup} WHERE bucket >= $c", {"c": cursor})
    last = scalar(
        connection,
        "SELECT epoch_us(max(started_at)) FROM results WHERE started_at >= $c",
        {"c": at(cursor)},
    )
    if last is not None:
        _rollup_range(connection, tables, cursor, last // US)
    if hist_days < today:
        # Finish the day being filled (its last blocks), then any whole days after it.
        finished = (hist_days + 1) * DAY
        if hist_to < finished:
            _hist_add(connection, tables, hist_to, finished)
        for day in range(hist_days + 1, today):
            _hist_insert(connection, tables, day * DAY, (day + 1) * DAY)
        hist_days, hist_to = today, today * DAY
    if long_end > hist_to:
        _hist_add(connection, tables, hist_to, long_end)
        hist_to = long_end
    received = newest_received(connection, since)
    values = {
        "cursor": str(settled),
        "hist_days": str(hist_days),
        "hist_to": str(hist_to),
        "received": str(received or meta["received"]),
    }
    if late_from is not None or values["hist_to"] != meta["hist_to"]:
        values[days_token()] = new_token()  # the daily histograms changed (`kept.py`)
    write_meta(connection, tables, values)
    return Refresh(late_from)


def _rollup_range(connection: Connection, tables: Tables, since: int, last: int) -> None:
    """Insert rollup rows for results started from `since` on, a day of rows at a time.

    Smaller groups keep DuckDB's hash tables small: per day is several times faster than
    all at once.
    """
    lower = since
    while lower <= last:
        upper = floor_to(lower, DAY) + DAY
        bound = "started_at >= $lo" + (" AND started_at < $hi" if upper <= last else "")
        connection.execute(
            f"INSERT INTO {tables.rollup} ({ROLLUP_COLUMNS}) "
            + rollup_select(bound, source(connection, at(lower), at(upper))),
            {"lo": at(lower), **({"hi": at(upper)} if upper <= last else {})},
        )
        lower = upper


def _hist_insert(connection: Connection, tables: Tables, since: int, until: int) -> None:
    """The histograms of the whole days [since, until), summed from the per-day tier's
    (`store/days.py`, which the builder fills first) rather than binned again from raw rows:
    the same counts, 0.02 s a day instead of 0.2 s at 1,000 canaries. Days the tier lacks
    yet (a server writes it a few days a build) are binned from raw rows."""
    held = min(max(days.held(connection), since // DAY), until // DAY) * DAY
    if held > since:
        tier, parameters = days.relation(connection, since // DAY, held // DAY)
        connection.execute(
            f"""INSERT INTO {tables.hist} ({HIST_COLUMNS})
                SELECT parent, region, day, bin, sum(n) FROM (
                    SELECT parent, region, day, unnest(bins) AS bin, unnest(counts) AS n
                    FROM {tier})
                GROUP BY parent, region, day, bin""",
            parameters,
        )
    if held < until:
        relation = source(connection, at(held), at(until))
        connection.execute(
            f"INSERT INTO {tables.hist} ({HIST_COLUMNS}) "
            + hist_select("started_at >= $lo AND started_at < $hi", relation),
            {"lo": at(held), "hi": at(until)},
        )


def _hist_add(connection: Connection, tables: Tables, since: int, until: int) -> None:
    """Add the counts of the rows started in [since, until) (within one day) to that day's
    histogram rows: updated in place where a (canary, region, bin) has a row already, so a
    block costs a few megabytes of log less than rewriting the day."""
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE site_block AS "
        + hist_select("started_at >= $lo AND started_at < $hi"),
        {"lo": at(since), "hi": at(until)},
    )
    match = """h.day = $day AND h.parent = b.parent AND h.region = b.region
               AND h.day = b.day AND h.bin = b.bin"""
    connection.execute(
        f"UPDATE {tables.hist} h SET n = h.n + b.n FROM site_block b WHERE {match}",
        {"day": since // DAY},
    )
    connection.execute(
        f"""INSERT INTO {tables.hist} ({HIST_COLUMNS}) SELECT * FROM site_block b
            WHERE NOT EXISTS (SELECT 1 FROM {tables.hist} h WHERE {match})""",
        {"day": since // DAY},
    )
    connection.execute("DROP TABLE site_block")


def _merge_failures(connection: Connection, tables: Tables, since_us: int, now: int) -> None:
    """Add the failed runs received since a time (each once: the overlap re-reads some) and
    forget those started more than two days ago."""
    connection.execute(
        f"""INSERT INTO {tables.failures} SELECT {FAILURE_COLUMNS} FROM results r
            WHERE r.received_at > $since AND r.{SQL_DOWN} AND r.started_at >= $horizon
              AND NOT EXISTS (
                  SELECT 1 FROM {tables.failures} f
                  WHERE f.agent = r.agent AND f.canary = r.canary
                    AND f.check_name = r.check_name AND f.started_at = r.started_at)""",
        {
            "since": datetime.fromtimestamp(since_us / US, UTC),
            "horizon": at(now - LATEST_HORIZON),
        },
    )
    connection.execute(
        f"DELETE FROM {tables.failures} WHERE started_at < $horizon",
        {"horizon": at(now - LATEST_HORIZON)},
    )
