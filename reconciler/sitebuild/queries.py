"""DuckDB reads of the status site: window figures and chart points, and the live state.

Window figures are materialised in `site_window` and `site_chart` (`figures.py`), and each
window's open part in `site_live` and `site_tail` (`live.py`), so a build reads a few
thousand stored rows, and the chart points of the pages it draws. Uptime is exact for every
window; quantiles come from histograms (`sketch.py`, within 2%). Chart points are the exact
p95 of each 15-minute bucket (24 h) and the highest 15-minute p95 of each 2-hour or 6-hour
slot (7 d, 30 d), so short spikes stay visible on long charts.

The live part is read on every build: recent failures from `site_failures` (the status is
`store/status.py`'s, the read API's too).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from reconciler.core.outcomes import SQL_DEGRADED, SQL_DOWN, SQL_RETRIED
from reconciler.sitebuild.charts import Points
from reconciler.sitebuild.figures import staged_name, staged_series_token
from reconciler.sitebuild.kept import Kept, series_token
from reconciler.sitebuild.moves import Bounds, parse
from reconciler.sitebuild.tables import WINDOW_COLUMNS, Tables, read_meta
from reconciler.sitebuild.windows import WINDOWS, Window, window_named
from reconciler.store.db import Connection

# A canary's chart points in one window, by region.
Series = dict[str, Points]
# A canary's chart points from the slot holding the window's stored end on, by region.
Tails = dict[str, Points]


class Figures(NamedTuple):
    """A window's figures for a canary in one region or in all (region None); a tuple: a
    build reads tens of thousands."""

    runs: int
    passes: int
    p50: float | None
    p95: float | None
    p99: float | None


# Up runs counted apart: (degraded, passed after retries).
OutcomeCounts = tuple[int, int]


@dataclass(frozen=True)
class WindowState:
    """Where a window stands: its bounds and a version bumped whenever its figures change."""

    window: Window
    start: int
    end: int
    version: int


def window_states(
    connection: Connection, tables: Tables, meta: dict[str, str] | None = None
) -> dict[str, WindowState]:
    """Each window's stored bounds and version (windows never computed are left out;
    `meta`: `site_meta` if read already)."""
    meta = read_meta(connection, tables) if meta is None else meta
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
    """Every published figure with its window's open part, by (window, canary key, region or
    None for all regions)."""
    # Stored figures that the open part replaces are left out in SQL: in a busy fleet that is
    # nearly all of them, and a Python object less each.
    rows = connection.execute(
        f"""SELECT {WINDOW_COLUMNS} FROM {tables.window} w
            WHERE win IN (SELECT unnest($names::VARCHAR[]))
              AND NOT EXISTS (
                  SELECT 1 FROM {tables.live} l
                  WHERE l.win = w.win AND l.parent = w.parent
                    AND l.region IS NOT DISTINCT FROM w.region)
            UNION ALL
            SELECT {WINDOW_COLUMNS} FROM {tables.live}""",
        {"names": [window.name for window in WINDOWS]},
    ).fetchall()
    return {
        (window, parent, region): Figures(runs, passes, p50, p95, p99)
        for window, parent, region, runs, passes, p50, p95, p99 in rows
    }


def chart_tails(
    connection: Connection, tables: Tables, windows: dict[str, WindowState]
) -> dict[tuple[str, str], Tails]:
    """Every chart's points from the slot holding its window's stored end on (`site_tail`),
    by (window, canary key): a few per chart, read on every build (pages' keys digest them),
    joined into one string per series as `stored_series` reads stored points."""
    steps = " ".join(f"WHEN '{w.name}' THEN {w.step}" for w in WINDOWS)
    rows = connection.execute(
        f"""SELECT win, parent, region, min(slot), count(*), string_agg(shown, ',' ORDER BY slot),
                   max(p95), arg_max(p95, slot),
                   CASE WHEN (max(slot) - min(slot)) // (CASE win {steps} END) + 1 <> count(*)
                        THEN list(slot ORDER BY slot) END
            FROM {tables.tail} GROUP BY win, parent, region"""
    ).fetchall()
    tails: dict[tuple[str, str], Tails] = {}
    for window, parent, region, points in _framed(rows, _frames(windows.values())):
        key = (window, parent)
        found = tails.get(key)
        if found is None:
            found = tails[key] = {}
        found[region] = points
    return tails


def _frames(states: Iterable[WindowState]) -> dict[str, tuple[int, int]]:
    """Each window's chart frame: its first slot's start (s) and its step."""
    return {
        state.window.name: (state.window.frame(state.start), state.window.step) for state in states
    }


def _framed(
    rows: Iterable[tuple[Any, ...]], frames: dict[str, tuple[int, int]]
) -> Iterator[tuple[str, str, str, Points]]:
    """Rows of joined points (window, canary key, region, first slot's start, count, values,
    highest, latest, every slot's start when they have a gap) as `Points` in their window's
    frame (`frames`); rows of a window without one are left out."""
    for window, parent, region, low, count, shown, highest, latest, gaps in rows:
        framed = frames.get(window)
        if framed is None:
            continue
        frame, step = framed
        first = (low - frame) // step
        slots: Sequence[int] = (
            range(first, first + count) if gaps is None else [(s - frame) // step for s in gaps]
        )
        yield window, parent, region, Points(slots, shown, highest, latest)


def stored_series(
    connection: Connection,
    tables: Tables,
    wanted: Iterable[tuple[str, str]],
    canaries: int,
    kept: Kept | None = None,
) -> dict[str, dict[tuple[str, str], Series]]:
    """The stored chart points of the wanted charts, by window, then (window, canary key),
    then region: slots and p95 values, to be followed by each window's tail
    (`chart_tails`), which pages do as they draw their chart (`charts.latency_chart`).

    Slots are stored by their start time and returned as indexes into the window's current
    frame (`Window.frame`): slot i starts at frame + i · step; a run of slots without a gap
    (nearly always) comes back as a `range`, and only series with gaps carry a list of
    slots (a list per series costs more than all the rest). The values come as stored,
    formatted (`shown`), joined into one string per region when the window's points last
    changed (`site_series`): every build draws the chart of every canary with a new run, and
    joining their 1.5 million points on each build took 0.2-0.3 s; reading the joined rows
    through Arrow takes a few hundredths.

    Args:
        connection: the state.
        tables: where the site's tables are.
        wanted: the (window, canary key) pairs to load.
        canaries: how many canaries there are (a window wanted for half of them or more is
            read whole).
        kept: the series of whole windows as the builder read them last (`kept.py`), handed
            out as they are (never changed); None reads them on every call.
    """
    by_window: dict[str, list[str]] = {}
    for window, parent in wanted:
        by_window.setdefault(window, []).append(parent)
    if not by_window:
        return {}
    meta = read_meta(connection, tables)
    kept = Kept() if kept is None else kept
    # A window is read whole (and kept) when most canaries' charts are wanted (a long
    # window's in the minutes after midnight: most, not all), or when it is kept already.
    whole = [
        window
        for window, parents in by_window.items()
        if 2 * len(parents) >= canaries
        or kept.holds(_series_name(window), meta.get(series_token(window)))
    ]
    pairs = [(w, p) for w, parents in by_window.items() if w not in whole for p in parents]
    frames = _frames(window_states(connection, tables, meta).values())
    series = {
        window: kept.get(
            _series_name(window),
            meta.get(series_token(window)),
            partial(_read_series, connection, tables, frames, [window], []),
        )
        for window in whole
    }
    if pairs:
        for key, points in _read_series(connection, tables, frames, [], pairs).items():
            series.setdefault(key[0], {})[key] = points
    return series


def keep_staged_series(
    connection: Connection, tables: Tables, kept: Kept, windows: Iterable[str]
) -> list[Staged]:
    """Read the staged chart series of `windows` into `kept`, as `stored_series` will read
    them once published: under the token they will be published with
    (`figures.staged_series_token`), their slots in the frame of the staged bounds."""
    meta = read_meta(connection, tables)
    staged_series = []
    for name in windows:
        token = meta.get(staged_series_token(name))
        bounds = parse(meta.get(f"window.{name}.staged"))
        if not token or bounds is None:
            continue
        window, staged = window_named(name), staged_name(name)
        frames = {staged: (window.frame(bounds[0]), window.step)}
        read = partial(_read_series, connection, tables, frames, [staged], [], {staged: name})
        series = kept.get(_series_name(name), token, read)
        staged_series.append(Staged(window, token, bounds, series))
    return staged_series


class Staged(NamedTuple):
    """A staged window's chart series (`keep_staged_series`), as they will be published."""

    window: Window
    token: str  # the series token they will be published with
    bounds: Bounds  # the staged bounds
    series: dict[tuple[str, str], Series]


def _series_name(window: str) -> str:
    """The name a window's whole chart series are kept under (`Kept`)."""
    return f"series.{window}"


def _read_series(
    connection: Connection,
    tables: Tables,
    frames: dict[str, tuple[int, int]],
    whole: list[str],
    pairs: list[tuple[str, str]],
    labels: dict[str, str] | None = None,
) -> dict[tuple[str, str], Series]:
    """`site_series` rows of the `whole` windows and of the (window, canary key) `pairs`, as
    points by (window, canary key), then region (`labels`: the window each row's `win`
    stands for, when not itself)."""
    where = """WHERE win IN (SELECT unnest($whole::VARCHAR[]))
                  OR (win, parent) IN (
                      SELECT (unnest($windows::VARCHAR[]), unnest($parents::VARCHAR[])))"""
    parameters: dict[str, Any] = {
        "whole": whole,
        "windows": [w for w, _ in pairs],
        "parents": [p for _, p in pairs],
    }
    relation = connection.sql(
        f"""SELECT win, parent, region, low, count, shown, highest, latest, slots
            FROM {tables.series} {where}""",
        params=parameters,
    )
    assert relation is not None  # a SELECT always gives a relation
    table = relation.to_arrow_table()
    columns = [table.column(name).to_pylist() for name in table.column_names]
    series: dict[tuple[str, str], Series] = {}
    for window, parent, region, points in _framed(zip(*columns, strict=True), frames):
        label = labels.get(window, window) if labels else window
        series.setdefault((label, parent), {})[region] = points
    return series


def recent_failures(
    connection: Connection, tables: Tables, since: datetime, until: datetime, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """Each canary's latest runs that did not pass, newest first: the newest `limit` of each
    of its regions (for a region's view), each marked whether it is among the canary's
    newest `limit` (the view of every region). From `site_failures`, which holds two days
    of them: `since` must not be further back.

    Args:
        connection: the state.
        tables: where the site's tables are.
        since: runs started before this are left out.
        until: runs started at or after this are left out.
        limit: at most this many per canary and region.

    Returns:
        By canary key: region, agent, check, started_at (whole seconds since the epoch),
        status, code, message, duration_ms, retries, and `overall` (among the canary's
        newest `limit`).
    """
    order = "started_at DESC, agent, check_name"
    rows = connection.execute(
        f"""SELECT parent, region, agent, check_name, epoch(started_at)::BIGINT, status, code,
                   message, duration_ms, retries,
                   row_number() OVER (PARTITION BY parent ORDER BY {order}) <= $limit
            FROM {tables.failures}
            WHERE started_at >= $since AND started_at < $until AND {SQL_DOWN}
            QUALIFY row_number() OVER (PARTITION BY parent, region ORDER BY {order}) <= $limit
            ORDER BY parent, {order}""",
        {"since": since, "until": until, "limit": limit},
    ).fetchall()
    failures: dict[str, list[dict[str, Any]]] = {}
    for (
        parent, region, agent, check, started_at, status, code, message, duration, retries,
        overall,
    ) in rows:  # fmt: skip
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
                "retries": retries,
                "overall": overall,
            }
        )
    return failures


def outcome_counts(
    connection: Connection, since: datetime, until: datetime
) -> dict[str, dict[str | None, OutcomeCounts]]:
    """Degraded runs and runs that passed only after retries, per canary and region and per
    canary (region None), started in [since, until): one grouped query over the live
    `results` table (the window tables keep no such counts).

    Canaries and regions with neither are left out (their counts are 0)."""
    rows = connection.execute(
        f"""SELECT parent, region, grouping(region) AS overall, {SQL_DEGRADED}, {SQL_RETRIED}
            FROM results
            WHERE started_at >= $since AND started_at < $until
              AND (status = 'degraded' OR retries > 0)
            GROUP BY GROUPING SETS ((parent, region), (parent))""",
        {"since": since, "until": until},
    ).fetchall()
    counts: dict[str, dict[str | None, OutcomeCounts]] = {}
    for parent, region, overall, degraded, retried in rows:
        if degraded or retried:
            counts.setdefault(parent, {})[None if overall else region] = (degraded, retried)
    return counts


def latest_result(connection: Connection, now: datetime) -> datetime | None:
    """When the newest stored run started (looking at the last hour first, then the last day:
    zone maps keep the scan to them; a day of a busy fleet's rows took 7-9 ms)."""
    for back in (timedelta(hours=1), timedelta(days=1), None):
        where = "" if back is None else "WHERE started_at >= $since"
        row = connection.execute(
            f"SELECT max(started_at) FROM results {where}",
            {} if back is None else {"since": now - back},
        ).fetchone()
        if row and row[0] is not None:
            moment: datetime = row[0]
            return moment
    return None


def incidents_by_month(connection: Connection, since: datetime) -> dict[tuple[str, date], int]:
    """Incidents opened per canary and calendar month (UTC) since `since`."""
    rows = connection.execute(
        """SELECT canary, date_trunc('month', opened_at AT TIME ZONE 'UTC')::DATE AS month,
                  count(*)
           FROM incidents WHERE opened_at >= $since
           GROUP BY canary, month""",
        {"since": since},
    ).fetchall()
    return {(canary, month): int(count) for canary, month, count in rows}
