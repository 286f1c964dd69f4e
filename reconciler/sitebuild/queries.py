"""DuckDB queries of the status site: window figures and chart points, and the live state.

Window figures are materialised in `site_window` and `site_chart` when a window moves (its
end crosses a step) or late rows changed what it covers, so a rebuild in between reads a few
thousand stored rows. Quantiles are computed by DuckDB:

* 24 h: exact, `quantile_cont` over the raw rows of the window (a zone-map-pruned scan of one
  day of rows), per canary and region and per canary;
* 7 d and 30 d: from the daily histograms (`sketch.py`, within 2%), because an exact
  quantile over a month of rows means sorting all of them on every move of the window.

Uptime is exact for every window (24 h: counted with the quantiles; 7 d, 30 d: sums of
rollup buckets). Chart points are the exact p95 of each complete 15-minute bucket (24 h)
and the highest 15-minute p95 of each 2-hour or 6-hour slot (7 d, 30 d), so short spikes
stay visible on long charts.

The live part (blended status, recent failures) is read from raw results on every build:
`reports.target_statuses` gives the status with the same rule as the read API, from the
oldest of the checks' newest runs (`status_since`) rather than a day back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from reconciler.sitebuild.sketch import quantiles_sql
from reconciler.sitebuild.tables import Tables, at, read_meta, write_meta
from reconciler.sitebuild.windows import DAY, ROLLUP_STEP, WINDOWS, Window
from reconciler.store.db import Connection


@dataclass(frozen=True)
class Figures:
    """A window's figures for a canary in one region or in all (region None)."""

    runs: int
    passes: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class WindowState:
    """Where a window stands: its bounds and a version bumped whenever its figures change."""

    window: Window
    start: int
    end: int
    version: int


def update_windows(
    connection: Connection, tables: Tables, now: int, late_from: int | None
) -> list[str]:
    """Recompute the windows that moved or that late rows changed (in the caller's transaction).

    Returns:
        The names of the windows recomputed.
    """
    meta = read_meta(connection, tables)
    due = []
    for window in WINDOWS:
        start, end = window.bounds(now)
        moved = meta.get(f"window.{window.name}") != f"{start}:{end}"
        if moved or (late_from is not None and late_from < end):
            due.append((window, start, end))
    changed: dict[str, str] = {}
    for window, start, end in due:
        for table in (tables.window, tables.chart):
            connection.execute(f"DELETE FROM {table} WHERE win = $w", {"w": window.name})
        if window.exact:
            _exact_figures(connection, tables, window, start, end)
        _chart(connection, tables, window, start, end)
        changed[f"window.{window.name}"] = f"{start}:{end}"
        version = int(meta.get(f"window.{window.name}.version", "0")) + 1
        changed[f"window.{window.name}.version"] = str(version)
    _sketch_figures(connection, tables, [(w, s, e) for w, s, e in due if not w.exact])
    if changed:
        write_meta(connection, tables, changed)
    return [window.name for window, _, _ in due]


_WINDOW_COLUMNS = "win, parent, region, runs, passes, p50, p95, p99"


def _exact_figures(
    connection: Connection, tables: Tables, window: Window, start: int, end: int
) -> None:
    for keys, region in (("parent, region", "region"), ("parent", "NULL")):
        connection.execute(
            f"""INSERT INTO {tables.window} ({_WINDOW_COLUMNS})
                SELECT $w, parent, {region}, runs, passes, q[1], q[2], q[3] FROM (
                    SELECT {keys}, count(*) AS runs,
                           count(*) FILTER (WHERE status = 'pass') AS passes,
                           quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q
                    FROM results WHERE started_at >= $s AND started_at < $e
                    GROUP BY {keys})""",
            {"w": window.name, "s": at(start), "e": at(end)},
        )


def _sketch_figures(
    connection: Connection, tables: Tables, due: list[tuple[Window, int, int]]
) -> None:
    """Figures of the long windows: runs from the rollup, quantiles from the histograms.

    The histogram days of every window due are added up in one pass (one column each).
    """
    if not due:
        return
    days = [(start // DAY, end // DAY) for _, start, end in due]
    sums = ", ".join(
        f"sum(n) FILTER (WHERE day BETWEEN {first} AND {last}) AS n{index}"
        for index, (first, last) in enumerate(days)
    )
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_counts AS
            SELECT parent, region, bin, {sums} FROM {tables.hist}
            WHERE day BETWEEN $d0 AND $d1
            GROUP BY GROUPING SETS ((parent, region, bin), (parent, bin))""",
        {"d0": min(first for first, _ in days), "d1": max(last for _, last in days)},
    )
    for index, (window, start, end) in enumerate(due):
        counts = f"(SELECT parent, region, bin, n{index} AS n FROM site_counts WHERE n{index} > 0)"
        connection.execute(
            f"""INSERT INTO {tables.window} ({_WINDOW_COLUMNS})
                WITH runs AS (
                    SELECT parent, region, sum(runs) AS runs, sum(passes) AS passes
                    FROM {tables.rollup} WHERE bucket >= $s AND bucket < $e
                    GROUP BY GROUPING SETS ((parent, region), (parent))
                ),
                quantiles AS ({quantiles_sql(counts, "parent, region")})
                SELECT $w, r.parent, r.region, r.runs, r.passes, q.q[1], q.q[2], q.q[3]
                FROM runs r LEFT JOIN quantiles q
                  ON q.parent = r.parent AND q.region IS NOT DISTINCT FROM r.region""",
            {"w": window.name, "s": start, "e": end},
        )
    connection.execute("DROP TABLE site_counts")


def _chart(connection: Connection, tables: Tables, window: Window, start: int, end: int) -> None:
    """Chart points from the rollup buckets wholly inside the window (the highest bucket p95
    of each slot)."""
    connection.execute(
        f"""INSERT INTO {tables.chart} (win, parent, region, slot, p95)
            SELECT $w, parent, region, CAST((bucket - $frame) // $step AS INTEGER) AS slot,
                   max(p95)
            FROM {tables.rollup} WHERE bucket >= $s AND bucket + $bucket <= $e
            GROUP BY parent, region, slot""",
        {
            "w": window.name,
            "s": start,
            "e": end,
            "frame": window.frame(start),
            "step": window.step,
            "bucket": ROLLUP_STEP,
        },
    )


def window_states(connection: Connection, tables: Tables) -> dict[str, WindowState]:
    """Each window's stored bounds and version (windows never computed are left out)."""
    meta = read_meta(connection, tables)
    states = {}
    for window in WINDOWS:
        bounds = meta.get(f"window.{window.name}")
        if bounds is not None:
            start, end = (int(part) for part in bounds.split(":"))
            version = int(meta.get(f"window.{window.name}.version", "0"))
            states[window.name] = WindowState(window, start, end, version)
    return states


def window_figures(
    connection: Connection, tables: Tables
) -> dict[tuple[str, str, str | None], Figures]:
    """Every stored figure, by (window, canary key, region or None for all regions)."""
    rows = connection.execute(f"SELECT {_WINDOW_COLUMNS} FROM {tables.window}").fetchall()
    return {
        (window, parent, region): Figures(int(runs), int(passes), p50, p95, p99)
        for window, parent, region, runs, passes, p50, p95, p99 in rows
    }


def chart_series(
    connection: Connection, tables: Tables, wanted: Iterable[tuple[str, str]] | None
) -> dict[tuple[str, str], dict[str, tuple[list[int], list[float]]]]:
    """Chart points by (window, canary key), then region: slots and p95 values.

    Args:
        connection: the state.
        tables: where the site's tables are.
        wanted: the (window, canary key) pairs to load, or None for all.
    """
    pairs = list(wanted) if wanted is not None else None
    if pairs == []:
        return {}
    where = ""
    parameters: dict[str, Any] = {}
    if pairs is not None:
        where = """WHERE (win, parent) IN (
                       SELECT (unnest($windows::VARCHAR[]), unnest($parents::VARCHAR[])))"""
        parameters = {"windows": [w for w, _ in pairs], "parents": [p for _, p in pairs]}
    rows = connection.execute(
        f"""SELECT win, parent, region, list(slot ORDER BY slot), list(p95 ORDER BY slot)
            FROM {tables.chart} {where} GROUP BY win, parent, region""",
        parameters,
    ).fetchall()
    series: dict[tuple[str, str], dict[str, tuple[list[int], list[float]]]] = {}
    for window, parent, region, slots, values in rows:
        series.setdefault((window, parent), {})[region] = (slots, values)
    return series


def status_since(
    connection: Connection, tables: Tables, checks: list[tuple[str, str]], horizon: datetime
) -> datetime:
    """How far back the blended status must look: the oldest newest run among the checks.

    Every check's newest run (if it is not older than `horizon`) starts at or after this,
    so `reports.target_statuses` gives the same answer from here as from `horizon`, while
    scanning minutes of rows instead of a day of them.
    """
    row = connection.execute(
        f"""SELECT min(l.started_at) FROM {tables.latest} l
            JOIN (SELECT unnest($canaries::VARCHAR[]) AS canary,
                         unnest($checks::VARCHAR[]) AS check_name) w
              USING (canary, check_name)
            WHERE l.started_at >= $horizon""",
        {
            "canaries": [canary for canary, _ in checks],
            "checks": [check for _, check in checks],
            "horizon": horizon,
        },
    ).fetchone()
    return row[0] if row and row[0] is not None else horizon


def recent_failures(
    connection: Connection, since: datetime, until: datetime, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """Each canary's latest runs that did not pass, newest first.

    Args:
        connection: the state.
        since: runs started before this are left out.
        until: runs started at or after this are left out.
        limit: at most this many per canary.

    Returns:
        By canary key: region, agent, check, started_at (whole seconds since the epoch),
        status, code, message, duration_ms.
    """
    rows = connection.execute(
        """SELECT parent, region, agent, check_name, epoch(started_at)::BIGINT, status, code,
                  message, duration_ms
           FROM results
           WHERE started_at >= $since AND started_at < $until AND status <> 'pass'
           QUALIFY row_number() OVER (
               PARTITION BY parent ORDER BY started_at DESC, agent, check_name) <= $limit
           ORDER BY parent, started_at DESC, agent, check_name""",
        {"since": since, "until": until, "limit": limit},
    ).fetchall()
    failures: dict[str, list[dict[str, Any]]] = {}
    for parent, region, agent, check, started_at, status, code, message, duration in rows:
        failures.setdefault(parent, []).append(
            {
                "region": region,
                "agent": agent,
                "check": check,
                "started_at": started_at,
                "status": status,
                "code": code,
                "message": message,
                "duration_ms": duration,
            }
        )
    return failures


def run_steps(connection: Connection, run_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The steps (weight, pause, group weights) of canary runs, by run id."""
    rows = connection.execute(
        "SELECT id, steps FROM canary_runs WHERE id IN (SELECT unnest($ids::VARCHAR[]))",
        {"ids": list(run_ids)},
    ).fetchall()
    return {run_id: orjson.loads(steps) for run_id, steps in rows}


def latest_result(connection: Connection, now: datetime) -> datetime | None:
    """When the newest stored run started (looking at the last day first: zone maps)."""
    for where in ("WHERE started_at >= $since", ""):
        row = connection.execute(
            f"SELECT max(started_at) FROM results {where}",
            {"since": now - timedelta(days=1)} if where else {},
        ).fetchone()
        if row and row[0] is not None:
            moment: datetime = row[0]
            return moment
    return None
