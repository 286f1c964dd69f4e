"""The 90-day and 365-day windows: whole days from the per-day tier, today from the rollups.

A year of the site's daily histograms and 15-minute rollups is too much to keep and to add
up (at 5,000 derived canaries, hundreds of millions of rows), so the long windows read the
per-day tier (`store/days.py`: runs, passes, exact p95 and a latency histogram per canary,
region, check and finished day) instead:

* **Stored figures** (`site_window`, `site_whist`, `site_chart`) cover the whole days before
  today. They move once a day (a quarter of an hour after midnight UTC, `windows.py`) by
  the day that entered and the day that left, read from the tier, and are computed from the
  whole tier the first time and when late rows changed a day they cover. Runs
  and passes are sums of days (exact); quantiles are read off the merged histograms
  (within 2%, `core/sketch.py`); a chart point is a day's highest per-check p95 (exact).
* **Today** is the open part, added at every build (`open_part`): runs and passes from the
  rollup buckets since midnight (kept current to the newest row), latency bins from today's
  daily histogram (`site_hist`, whole 2-hour blocks) plus the raw rows since its last block,
  which the other windows' open part reads anyway. Today's chart point is today's p95 read
  off the same counts (`today_points`).

These windows are never staged (`moves.py`): moving one costs a read of the tier once a day.
"""

from __future__ import annotations

from reconciler.core.sketch import quantiles_sql
from reconciler.sitebuild.moves import Move
from reconciler.sitebuild.tables import SHOWN_SQL, Tables, ensure_keys
from reconciler.sitebuild.windows import DAY
from reconciler.store import days
from reconciler.store.db import Connection

_COLUMNS = "win, parent, region, runs, passes, p50, p95, p99"


def tier_figures(connection: Connection, tables: Tables, move: Move) -> None:
    """A tiered window's figures, histogram and chart points for the bounds of `move` (in
    the caller's transaction): from scratch, or moved from the old bounds by the days that
    entered and left (a day's move reads two days of the tier instead of a year)."""
    name = move.window.name
    if move.old is None:
        spans = [(move.start // DAY, move.end // DAY, 1)]
    else:
        (enter_lo, enter_hi), (left_lo, left_hi) = move.entered, move.left
        spans = [(enter_lo // DAY, enter_hi // DAY, 1), (left_lo // DAY, left_hi // DAY, -1)]
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE site_tier (
               parent VARCHAR, region VARCHAR, day INTEGER, sign INTEGER, runs BIGINT,
               passes BIGINT, p95 DOUBLE, bins SMALLINT[], counts BIGINT[])"""
    )
    for first, last, sign in spans:
        if first < last:
            tier, parameters = days.relation(connection, first, last)
            connection.execute(
                f"""INSERT INTO site_tier SELECT parent, region, day, {sign}, runs, passes, p95,
                           bins, counts FROM {tier}""",
                parameters,
            )
    # Counts per canary, region and bin first (the one pass over every day's bins), then per
    # canary from those few rows rather than a second pass (GROUPING SETS) over the days.
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE site_leaf AS
           SELECT parent, region, bin, sum(sign * n)::BIGINT AS n FROM (
               SELECT parent, region, sign, unnest(bins) AS bin, unnest(counts) AS n
               FROM site_tier)
           GROUP BY parent, region, bin"""
    )
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE site_delta AS
           SELECT parent, region, bin, n FROM site_leaf
           UNION ALL
           SELECT parent, NULL AS region, bin, sum(n)::BIGINT FROM site_leaf GROUP BY parent, bin"""
    )
    ensure_keys(connection, tables, "site_delta")
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_moved AS
            SELECT k.id, d.bin, sum(d.n)::BIGINT AS n FROM site_delta d JOIN {tables.keys} k
              ON k.parent = d.parent AND k.region IS NOT DISTINCT FROM d.region
            GROUP BY k.id, d.bin HAVING sum(d.n) <> 0"""
    )
    sums = """SELECT parent, region, sum(sign * runs)::BIGINT AS runs,
                     sum(sign * passes)::BIGINT AS passes
              FROM site_tier GROUP BY GROUPING SETS ((parent, region), (parent))"""
    if move.old is None:
        connection.execute(f"DELETE FROM {tables.whist} WHERE win = $w", {"w": name})
        connection.execute(
            f"INSERT INTO {tables.whist} (win, id, bin, n) SELECT $w, id, bin, n FROM site_moved",
            {"w": name},
        )
        connection.execute(f"DELETE FROM {tables.chart} WHERE win = $w", {"w": name})
    else:
        # In place, as the other windows' histograms move (`figures.py`).
        match = "w.win = $w AND w.id = m.id AND w.bin = m.bin"
        connection.execute(
            f"UPDATE {tables.whist} w SET n = w.n + m.n FROM site_moved m WHERE {match}",
            {"w": name},
        )
        connection.execute(
            f"""INSERT INTO {tables.whist} (win, id, bin, n) SELECT $w, id, bin, n
                FROM site_moved m
                WHERE NOT EXISTS (SELECT 1 FROM {tables.whist} w WHERE {match})""",
            {"w": name},
        )
        connection.execute(f"DELETE FROM {tables.whist} WHERE win = $w AND n = 0", {"w": name})
        sums = f"""SELECT parent, region, sum(runs)::BIGINT AS runs,
                          sum(passes)::BIGINT AS passes FROM (
                       SELECT parent, region, runs, passes FROM {tables.window} WHERE win = $w
                       UNION ALL {sums})
                   GROUP BY parent, region"""
        connection.execute(
            f"DELETE FROM {tables.chart} WHERE win = $w AND slot < $s",
            {"w": name, "s": move.start},
        )
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE site_runs AS {sums}",
        {} if move.old is None else {"w": name},
    )
    # Keys with no run left in the window (no histogram counts) have no figures: the inner
    # join with the quantiles drops them, moved or computed from scratch alike.
    counts = f"(SELECT id, bin, n FROM {tables.whist} WHERE win = $w)"
    connection.execute(f"DELETE FROM {tables.window} WHERE win = $w", {"w": name})
    connection.execute(
        f"""INSERT INTO {tables.window} ({_COLUMNS})
            WITH quantiles AS ({quantiles_sql(counts, "id")})
            SELECT $w, r.parent, r.region, r.runs, r.passes, q.q[1], q.q[2], q.q[3]
            FROM site_runs r
            JOIN {tables.keys} k
              ON k.parent = r.parent AND k.region IS NOT DISTINCT FROM r.region
            JOIN quantiles q ON q.id = k.id""",
        {"w": name},
    )
    connection.execute(
        f"""INSERT INTO {tables.chart} (win, parent, region, slot, p95, shown)
            SELECT $w, parent, region, slot, p95, {SHOWN_SQL.format("p95")} FROM (
                SELECT parent, region, day * {DAY} AS slot, max(p95) AS p95
                FROM site_tier WHERE sign = 1 GROUP BY parent, region, day)""",
        {"w": name},
    )
    for table in ("site_tier", "site_leaf", "site_delta", "site_moved", "site_runs"):
        connection.execute(f"DROP TABLE {table}")


def today_points(connection: Connection, tables: Tables, end: int, hist_to: int) -> None:
    """The charts' points from a tiered window's stored end on (`temp.site_today`: parent,
    region, slot, p95): each day's p95 read off its latency histogram (today's daily
    histogram and the raw rows since its last block, `site_open`), like the stored days'
    exact p95, rather than the highest 15-minute p95 the other windows' tails show, which on
    a chart of days would stand out as a spike every day."""
    counts = f"""(SELECT parent || chr(0) || region || chr(0) || day AS k, bin, sum(n) AS n
                  FROM (SELECT parent, region, day, bin, n FROM {tables.hist}
                        WHERE day >= $end // {DAY}
                        UNION ALL
                        SELECT parent, region, bucket // {DAY}, bin, n FROM site_open
                        WHERE bucket >= $hist_to)
                  GROUP BY k, bin)"""
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_today AS
            SELECT split_part(k, chr(0), 1) AS parent, split_part(k, chr(0), 2) AS region,
                   split_part(k, chr(0), 3)::BIGINT * {DAY} AS slot, q[2] AS p95
            FROM ({quantiles_sql(counts, "k")})""",
        {"end": end, "hist_to": hist_to},
    )


def open_part(tables: Tables, hist_to: int) -> tuple[str, str, dict[str, object]]:
    """SQL for a tiered window's open part (today, from `$end`): its (parent, region, runs,
    passes) and its (parent, region, bin, n), and the parameters they take besides `$end`.

    `hist_to`: today's daily histogram counts the rows started before it; `site_open` (the
    raw rows of every window's open part, `live.py`) holds those after it.
    """
    sums = f"""SELECT parent, region, runs, passes FROM {tables.rollup} WHERE bucket >= $end"""
    bins = f"""SELECT parent, region, bin, n FROM {tables.hist} WHERE day >= $end // {DAY}
               UNION ALL
               SELECT parent, region, bin, n FROM site_open WHERE bucket >= $hist_to"""
    return sums, bins, {"hist_to": hist_to}
