"""The 90-day and 365-day windows: whole days from the per-day tier, today from the rollups.

A year of the site's daily histograms and 15-minute rollups is too much to keep and to add
up (at 5,000 derived canaries, hundreds of millions of rows), so the long windows read the
per-day tier (`store/days.py`: runs, passes, exact p95 and a latency histogram per canary,
region, check and finished day) instead:

* **Stored figures** (`site_window`, `site_whist`, `site_chart`) cover the whole days before
  today, and are computed from the tier when the window moves, once a day (a quarter of an
  hour after midnight UTC, `windows.py`), or when late rows changed a day they cover. Runs
  and passes are sums of days (exact); quantiles are read off the merged histograms
  (within 2%, `core/sketch.py`); a chart point is a day's highest per-check p95 (exact).
* **Today** is the open part, added at every build (`open_part`): runs and passes from the
  rollup buckets since midnight (kept current to the newest row), latency bins from today's
  daily histogram (`site_hist`, whole 2-hour blocks) plus the raw rows since its last block,
  which the other windows' open part reads anyway.

These windows are never staged (`moves.py`): moving one costs a read of the tier once a day.
"""

from __future__ import annotations

from reconciler.core.sketch import quantiles_sql
from reconciler.sitebuild.moves import Move
from reconciler.sitebuild.tables import SHOWN_SQL, Tables, both_levels, ensure_keys
from reconciler.sitebuild.windows import DAY
from reconciler.store import days
from reconciler.store.db import Connection

_COLUMNS = "win, parent, region, runs, passes, p50, p95, p99"


def tier_figures(connection: Connection, tables: Tables, move: Move) -> None:
    """A tiered window's figures, histogram and chart points for the bounds of `move`, from
    scratch (in the caller's transaction)."""
    name = move.window.name
    tier, parameters = days.relation(connection, move.start // DAY, move.end // DAY)
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_tier AS
            SELECT parent, region, day, runs, passes, p95, bins, counts FROM {tier}""",
        parameters,
    )
    bins = "(SELECT parent, region, unnest(bins) AS bin, unnest(counts) AS n FROM site_tier)"
    connection.execute(f"CREATE OR REPLACE TEMP TABLE site_delta AS {both_levels(bins)}")
    ensure_keys(connection, tables, "site_delta")
    connection.execute(f"DELETE FROM {tables.whist} WHERE win = $w", {"w": name})
    connection.execute(
        f"""INSERT INTO {tables.whist} (win, id, bin, n)
            SELECT $w, k.id, d.bin, sum(d.n)::BIGINT FROM site_delta d JOIN {tables.keys} k
              ON k.parent = d.parent AND k.region IS NOT DISTINCT FROM d.region
            GROUP BY k.id, d.bin""",
        {"w": name},
    )
    counts = f"(SELECT id, bin, n FROM {tables.whist} WHERE win = $w)"
    connection.execute(f"DELETE FROM {tables.window} WHERE win = $w", {"w": name})
    connection.execute(
        f"""INSERT INTO {tables.window} ({_COLUMNS})
            WITH quantiles AS ({quantiles_sql(counts, "id")})
            SELECT $w, r.parent, r.region, r.runs, r.passes, q.q[1], q.q[2], q.q[3]
            FROM (SELECT parent, region, sum(runs)::BIGINT AS runs,
                         sum(passes)::BIGINT AS passes
                  FROM site_tier GROUP BY GROUPING SETS ((parent, region), (parent))) r
            LEFT JOIN {tables.keys} k
              ON k.parent = r.parent AND k.region IS NOT DISTINCT FROM r.region
            LEFT JOIN quantiles q ON q.id = k.id""",
        {"w": name},
    )
    connection.execute(f"DELETE FROM {tables.chart} WHERE win = $w", {"w": name})
    connection.execute(
        f"""INSERT INTO {tables.chart} (win, parent, region, slot, p95, shown)
            SELECT $w, parent, region, slot, p95, {SHOWN_SQL.format("p95")} FROM (
                SELECT parent, region, day * {DAY} AS slot, max(p95) AS p95
                FROM site_tier GROUP BY parent, region, day)""",
        {"w": name},
    )
    for table in ("site_tier", "site_delta"):
        connection.execute(f"DROP TABLE {table}")


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
