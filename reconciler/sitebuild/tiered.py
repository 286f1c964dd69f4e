"""The 90-day and 365-day windows: whole days from the per-day tier, today's blocks from the
rollups and the daily histogram.

A year of the site's daily histograms and 15-minute rollups is too much to keep and to add
up (at 5,000 derived canaries, hundreds of millions of rows), so the long windows read the
per-day tier (`store/days.py`: runs, passes, exact p95 and a latency histogram per canary,
region, check and finished day) for the days before today, and are otherwise kept like the
7- and 30-day windows (`windows.py`, `figures.py`):

* **Stored figures** (`site_window`, `site_whist`) cover the whole days before today from the
  tier, plus today up to the last 2-hour boundary (today's rollup buckets and daily
  histogram, less the raw rows after the boundary that the histogram already holds). They
  move at each 2-hour boundary (in a minute of their own, staged ahead like the others,
  `moves.py`) by the raw rows of the two hours that entered, and at midnight also by the
  tier's day that left; they are computed from the whole tier the first time and when late
  rows changed what they cover. Runs and passes are sums (exact); quantiles are read off
  the merged histograms (within 2%, `core/sketch.py`).
* **Chart points** (`site_chart`, `tier_chart`) are the whole days before the day of the
  window's end, a day's highest per-check p95 (exact), moved when the window's figures are
  published; the point of the day of the end and after is read off that day's histogram at
  every build (`today_points`).
* **The open part** (the raw rows since the stored end) is added at every build as for the
  other windows (`live.py`).

A day's raw rows and its tier row count the same runs, passes and latency bins, so figures
moved across midnight (the day's blocks from raw rows) equal those computed from the tier: a
test compares the two.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from reconciler.core.sketch import quantiles_sql
from reconciler.sitebuild.kept import Kept
from reconciler.sitebuild.moves import Move
from reconciler.sitebuild.tables import (
    SHOWN_SQL,
    Tables,
    at,
    hist_select,
    move_histogram,
    store_window_figures,
)
from reconciler.sitebuild.windows import DAY
from reconciler.store import days
from reconciler.store.db import Connection


def tier_figures(
    connection: Connection, tables: Tables, move: Move, target: str, source: str, hist_to: int
) -> None:
    """A tiered window's figures (into the rows `target`) and histogram for the bounds of
    `move`, in the caller's transaction: from scratch, or moved from the old bounds (figures
    from the rows `source`) by the raw rows that entered and the tier's days that left.

    `hist_to`: today's daily histogram (`site_hist`) counts the rows started before this.
    """
    name = move.window.name
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE site_tier (
               parent VARCHAR, region VARCHAR, sign INTEGER, runs BIGINT, passes BIGINT,
               bins SMALLINT[], counts BIGINT[])"""
    )
    # Latency counts besides the tier's (parent, region, bin, n), and the span of rollup
    # buckets whose runs and passes entered.
    bins: list[str] = []
    parameters: dict[str, object] = {}
    if move.old is None:
        midnight = move.end // DAY * DAY
        spans = [(move.start // DAY, midnight // DAY, 1)]
        runs_from, runs_to = midnight, move.end
        if move.end > midnight and hist_to >= move.end:
            # Today's blocks: the daily histogram, less what it holds after the end.
            bins.append(f"SELECT parent, region, bin, n FROM {tables.hist} WHERE day = $today")
            cut = hist_select("started_at >= $cut AND started_at < $upto")
            bins.append(f"SELECT parent, region, bin, -n FROM ({cut})")
            upto = min(hist_to, midnight + DAY)
            parameters = {"today": midnight // DAY, "cut": at(move.end), "upto": at(upto)}
        elif move.end > midnight:
            counted = hist_select("started_at >= $lo AND started_at < $hi")
            bins.append(f"SELECT parent, region, bin, n FROM ({counted})")
            parameters = {"lo": at(midnight), "hi": at(move.end)}
    else:
        (enter_lo, enter_hi), (left_lo, left_hi) = move.entered, move.left
        spans = [(left_lo // DAY, left_hi // DAY, -1)]
        runs_from, runs_to = enter_lo, enter_hi
        counted = hist_select("started_at >= $lo AND started_at < $hi")
        bins.append(f"SELECT parent, region, bin, n FROM ({counted})")
        parameters = {"lo": at(enter_lo), "hi": at(enter_hi)}
    for first, last, sign in spans:
        if first < last:
            tier, tier_parameters = days.relation(connection, first, last)
            connection.execute(
                f"""INSERT INTO site_tier SELECT parent, region, {sign}, runs, passes, bins,
                           counts FROM {tier}""",
                tier_parameters,
            )
    # Counts per canary, region and bin first (the one pass over every day's bins), then per
    # canary from those few rows rather than a second pass (GROUPING SETS) over the days.
    others = "".join(f" UNION ALL {part}" for part in bins)
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_leaf AS
            SELECT parent, region, bin, sum(n)::BIGINT AS n FROM (
                SELECT parent, region, unnest(bins) AS bin, sign * unnest(counts) AS n
                FROM site_tier{others})
            GROUP BY parent, region, bin""",
        parameters,
    )
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE site_delta AS
           SELECT parent, region, bin, n FROM site_leaf
           UNION ALL
           SELECT parent, NULL AS region, bin, sum(n)::BIGINT FROM site_leaf GROUP BY parent, bin"""
    )
    move_histogram(connection, tables, name, fresh=move.old is None)
    sums = f"""SELECT parent, region, sum(runs)::BIGINT AS runs, sum(passes)::BIGINT AS passes
               FROM (SELECT parent, region, sign * runs AS runs, sign * passes AS passes
                     FROM site_tier
                     UNION ALL
                     SELECT parent, region, runs, passes FROM {tables.rollup}
                     WHERE bucket >= $r0 AND bucket < $r1)
               GROUP BY GROUPING SETS ((parent, region), (parent))"""
    sum_parameters: dict[str, object] = {"r0": runs_from, "r1": runs_to}
    if move.old is not None:
        sums = f"""SELECT parent, region, sum(runs)::BIGINT AS runs,
                          sum(passes)::BIGINT AS passes FROM (
                       SELECT parent, region, runs, passes FROM {tables.window}
                       WHERE win = $source
                       UNION ALL {sums})
                   GROUP BY parent, region"""
        sum_parameters["source"] = source
    connection.execute(f"CREATE OR REPLACE TEMP TABLE site_runs AS {sums}", sum_parameters)
    # Keys with no run left in the window (no histogram counts) have no figures, moved or
    # computed from scratch alike.
    store_window_figures(connection, tables, name, target, every_key=False)
    for table in ("site_tier", "site_leaf", "site_delta", "site_moved", "site_runs"):
        connection.execute(f"DROP TABLE {table}")


def tier_chart(connection: Connection, tables: Tables, move: Move) -> None:
    """A tiered window's chart points for the published bounds of `move`: a point per whole
    day before the day of its end, each the day's highest per-check p95 from the tier; moved
    by the days that left and the days that became whole."""
    name = move.window.name
    last = move.end // DAY
    if move.old is None:
        first = move.start // DAY
        connection.execute(f"DELETE FROM {tables.chart} WHERE win = $w", {"w": name})
    else:
        first = max(move.start, move.old[1]) // DAY
        connection.execute(
            f"DELETE FROM {tables.chart} WHERE win = $w AND (slot < $s OR slot >= $f)",
            {"w": name, "s": move.start, "f": first * DAY},
        )
    if first >= last:
        return
    tier, parameters = days.relation(connection, first, last)
    connection.execute(
        f"""INSERT INTO {tables.chart} (win, parent, region, slot, p95, shown)
            SELECT $w, parent, region, slot, p95, {SHOWN_SQL.format("p95")} FROM (
                SELECT parent, region, day * {DAY} AS slot, max(p95) AS p95
                FROM {tier} GROUP BY parent, region, day)""",
        {"w": name, **parameters},
    )


# The day points' key in their running sums: a 64-bit hash of canary, region and day, so
# that `quantiles_sql` partitions and sorts by one integer rather than two strings and a day
# (75-90 ms a build against 120-130 ms at 23:59 at 1,000 canaries in 5 regions, a day of
# daily histogram rows, the check below included). Names are joined back by it. Two keys of
# one hash (about one in 10^11 at 10,000 keys) would add up their counts: the points are
# then computed again by the three columns (`_points_sql`'s `exact`).
POINT_KEY_SQL = "hash(parent, region, day)"


def today_points(
    connection: Connection,
    tables: Tables,
    end: int,
    hist_to: int,
    kept: Kept | None = None,
    token: str | None = None,
) -> None:
    """The charts' points from a tiered window's stored end on (`temp.site_today`: parent,
    region, slot, p95, and the key they were computed by): each day's p95 read off its
    latency histogram (today's daily histogram and the raw rows since its last block,
    `site_open`), like the stored days' exact p95, rather than the highest 15-minute p95 the
    other windows' tails show, which on a chart of days would stand out as a spike every day.

    The days the daily histogram holds whole (yesterday, in the hours after midnight the
    tier has not taken it yet) read no open rows: their points are kept under the daily
    histograms' `token` (`kept.py`), and only the days from `hist_to` on are read again.
    """
    first, current = end // DAY, hist_to // DAY
    parameters = {"first": max(first, current), "last": None, "hist_to": hist_to}
    create = "CREATE OR REPLACE TEMP TABLE site_today AS"
    connection.execute(f"{create} {_points_sql(tables, True)}", parameters)
    if _collided(_arrow(connection, "SELECT k FROM site_today", {})):
        connection.execute(f"{create} {_points_sql(tables, True, exact=True)}", parameters)
    if first >= current:
        return
    kept = Kept() if kept is None else kept
    whole = kept.get(
        "days.points",
        token and f"{token}:{first}:{current}",
        lambda: _whole_days(connection, tables, first, current),
    )
    connection.register("site_whole_days", whole)
    try:
        connection.execute("INSERT INTO site_today SELECT * FROM site_whole_days")
    finally:
        connection.unregister("site_whole_days")


def _whole_days(connection: Connection, tables: Tables, first: int, last: int) -> pa.Table:
    """The points of the days [first, last), which the daily histogram holds whole."""
    days: dict[str, object] = {"first": first, "last": last}
    points = _arrow(connection, _points_sql(tables, False), days)
    if _collided(points):
        points = _arrow(connection, _points_sql(tables, False, exact=True), days)
    return points


def _arrow(connection: Connection, sql: str, parameters: dict[str, object]) -> pa.Table:
    relation = connection.sql(sql, params=parameters)
    assert relation is not None  # a SELECT always gives a relation
    return relation.to_arrow_table()


def _collided(points: pa.Table) -> bool:
    """Whether two of the points share a key: two names joined to one hash."""
    keys = points.column("k")
    return len(keys) > len(pc.unique(keys))


def _points_sql(tables: Tables, with_open: bool, *, exact: bool = False) -> str:
    """SQL: each day's p95 per canary and region from day `$first` (before `$last` if not
    NULL), from the daily histogram and, `with_open`, the raw rows since `$hist_to`; keyed
    by `POINT_KEY_SQL` (by the three columns when `exact`), which it returns as `k`."""
    open_rows = (
        f"""UNION ALL
            SELECT parent, region, bucket // {DAY}, bin, n FROM site_open
            WHERE bucket >= $hist_to"""
        if with_open
        else ""
    )
    rows = f"""SELECT parent, region, day, bin, n FROM {tables.hist}
               WHERE day >= $first AND ($last IS NULL OR day < $last)
               {open_rows}"""
    # Two significant digits: on a chart of days the finer ones are not seen, and they move
    # with every run (each redrawing the page).
    p95 = """CASE WHEN q[2] > 0 THEN round(q[2], 1 - CAST(floor(log10(q[2])) AS INTEGER))
                  ELSE q[2] END AS p95"""
    if exact:
        counts = f"""(SELECT parent, region, day, bin, sum(n) AS n FROM ({rows})
                      GROUP BY parent, region, day, bin)"""
        return f"""SELECT parent, region, day::BIGINT * {DAY} AS slot, {p95},
                          {POINT_KEY_SQL} AS k
                   FROM ({quantiles_sql(counts, "parent, region, day")})"""
    counts = f"(SELECT {POINT_KEY_SQL} AS k, bin, sum(n) AS n FROM ({rows}) GROUP BY k, bin)"
    names = f"(SELECT DISTINCT {POINT_KEY_SQL} AS k, parent, region, day FROM ({rows}))"
    return f"""SELECT n.parent, n.region, n.day::BIGINT * {DAY} AS slot, {p95}, k
               FROM ({quantiles_sql(counts, "k")}) JOIN {names} n USING (k)"""
