"""Window figures and chart points, materialised when a window moves: moved, or recomputed.

A window moves by a step (5 minutes for 24 h, 2 hours for 7 d and 30 d); most of what it
covers stays. So a move updates the stored figures by what entered and what left, where the
figure allows it, and recomputes only the rest:

* **Chart points** (`site_chart`, one row per canary, region and slot, slots by their start
  time): only slots that lost a bucket at the start or gained one at the end are recomputed
  from the rollup; every other slot keeps its buckets and so its highest p95.
* **Runs and passes** (sums): the stored sums plus the rollup buckets that entered, less
  those that left (every window's bounds are on 15-minute buckets).
* **Quantiles**: from the window's latency histogram (`site_whist`), which moves the same
  way: plus the counts of the rows that entered, less those that left (read back from the
  daily histograms for calendar windows, which lose whole days; counted from the few
  minutes of raw rows that left a rolling window). Quantiles are then read off the histogram
  (`sketch.py`) per canary and region and per canary, keyed by a small integer
  (`site_keys`): sorting 350,000 histogram rows by an integer is 2-3 times faster than by
  two strings. The 24-hour quantiles come from histograms too (within 2%), although exact
  ones were affordable once per move: exact quantiles cannot be merged, and every build
  adds the rows of the window's open part to them (`live.py`).

Everything is recomputed from scratch the first time, when a window jumps further than it
overlaps itself (the server was down), and when late rows changed what the window already
covered (`Refresh.late_from` earlier than its stored end). A moved figure equals a recomputed
one exactly (integer sums, the same histogram counts): a test compares the two.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from reconciler.sitebuild.kept import new_token, series_token
from reconciler.sitebuild.moves import Move, moved, parse, plan_steps
from reconciler.sitebuild.tables import (
    SHOWN_SQL,
    Tables,
    at,
    both_levels,
    hist_select,
    move_histogram,
    read_meta,
    store_window_figures,
    write_meta,
)
from reconciler.sitebuild.tiered import tier_chart, tier_figures
from reconciler.sitebuild.windows import DAY, ROLLUP_STEP, Window
from reconciler.store.db import Connection


def staged_name(window: str) -> str:
    """The `win` of a window's staged figures in `site_window` (`moves.py`)."""
    return f"{window}+"


class Updated(NamedTuple):
    """What `update_windows` did, by window name."""

    published: list[str]  # new figures published (computed now, or staged before)
    staged: list[str]  # new figures computed and kept for the next build
    promoted: list[str]  # figures staged by an earlier build, published now


class Staging(Enum):
    """Which of `plan_steps`'s steps an `update_windows` call carries out."""

    WITH_BUILD = "with-build"  # all of them (one-off builds)
    DEFERRED = "deferred"  # all but staging, left to a call with `AHEAD` after the build
    AHEAD = "ahead"  # only staging (between two builds, off the path of the next)


def update_windows(
    connection: Connection,
    tables: Tables,
    now: int,
    late_from: int | None,
    staging: Staging = Staging.WITH_BUILD,
    tier_late_from: int | None = None,
    tier_until: int | None = None,
) -> Updated:
    """Compute, stage and publish window figures as `moves.plan_steps` decides (in the
    caller's transaction).

    With `Staging.DEFERRED` a build leaves the figures of a window that moved to a later
    `Staging.AHEAD` call: the build then shows the published figures (as it would after
    staging them) without paying for the move, and the next build publishes the staged
    figures. A builder that never makes the `AHEAD` call loses nothing: the next build,
    finding nothing staged, stages or publishes as usual.

    Tiered windows (`tiered.py`) take `tier_late_from` as their `late_from`, and wait while
    the per-day tier lacks days they cover (`tier_until`, its watermark; None: do not wait,
    days it lacks are read from raw rows).
    """
    meta = read_meta(connection, tables)
    built = meta.get("built")
    steps = [
        step
        for step in plan_steps(
            meta, now, late_from, int(built) if built else None, tier_late_from=tier_late_from
        )
        if not step.window.tier
        or tier_until is None
        or step.window.bounds(now)[1] // DAY <= tier_until
    ]
    if staging is Staging.DEFERRED:
        steps = [step for step in steps if not step.stage]
    elif staging is Staging.AHEAD:
        steps = [step for step in steps if step.stage]
    changed: dict[str, str] = {} if staging is Staging.AHEAD else {"built": str(now)}
    for step in steps:
        name = step.window.name
        if step.promote:
            connection.execute(f"DELETE FROM {tables.window} WHERE win = $w", {"w": name})
            connection.execute(
                f"UPDATE {tables.window} SET win = $w WHERE win = $staged",
                {"w": name, "staged": staged_name(name)},
            )
        move = step.compute
        if move is not None:
            target = staged_name(name) if step.stage else name
            # Sums move from the last computed figures (staged ones if any).
            source = staged_name(name) if meta.get(f"window.{name}.staged") else name
        if move is not None and step.window.tier:
            # Whole days from the per-day tier, today's blocks as the other windows'.
            tier_figures(connection, tables, move, target, source, int(meta["hist_to"]))
        elif move is not None:
            _histogram(connection, tables, move, int(meta["hist_to"]))
            _sketch_figures(connection, tables, move, target, source)
        if step.stage:
            assert move is not None
            changed[f"window.{name}.staged"] = f"{move.start}:{move.end}"
            described = _stage_series(connection, tables, meta, move)
            changed[series_staged(name)] = described
            changed[staged_series_token(name)] = new_token() if described else ""
            continue
        assert step.chart is not None
        connection.execute(
            f"DELETE FROM {tables.window} WHERE win = $staged", {"staged": staged_name(name)}
        )
        if step.window.tier:
            tier_chart(connection, tables, step.chart)
        else:
            _chart(connection, tables, step.chart)
        token = new_token()
        if meta.get(series_staged(name)) == _described(step.chart):
            # Joined between builds, when the figures were staged (`_stage_series`), and
            # published under the token they were staged with.
            token = meta.get(staged_series_token(name)) or token
            connection.execute(f"DELETE FROM {tables.series} WHERE win = $w", {"w": name})
            connection.execute(
                f"UPDATE {tables.series} SET win = $w WHERE win = $staged",
                {"w": name, "staged": staged_name(name)},
            )
        else:
            _series(connection, tables, step.chart.window)
        connection.execute(
            f"DELETE FROM {tables.series} WHERE win = $staged", {"staged": staged_name(name)}
        )
        changed[series_staged(name)] = ""
        changed[staged_series_token(name)] = ""
        changed[f"window.{name}"] = f"{step.chart.start}:{step.chart.end}"
        changed[f"window.{name}.staged"] = ""
        changed[f"window.{name}.version"] = str(int(meta.get(f"window.{name}.version", "0")) + 1)
        changed[series_token(name)] = token
    if changed:
        write_meta(connection, tables, changed)
    return Updated(
        [step.window.name for step in steps if not step.stage],
        [step.window.name for step in steps if step.stage],
        [step.window.name for step in steps if step.promote],
    )


def _histogram(connection: Connection, tables: Tables, move: Move, hist_to: int) -> None:
    """Bring a window's histogram (`site_whist`) to its new bounds.

    `hist_to`: the daily histograms cover rows started before this (the rollups' clock,
    at or after the window's end: the window lags at least as much).
    """
    name = move.window.name
    counted = hist_select("started_at >= $lo AND started_at < $hi")
    counted = f"(SELECT parent, region, bin, n FROM ({counted}))"
    if move.window.days is None:
        # Rolling: raw rows, a day of them from scratch, minutes of them entering and leaving.
        if move.old is None:
            delta = both_levels(counted)
            parameters: dict[str, object] = {"lo": at(move.start), "hi": at(move.end)}
        else:
            (enter_lo, enter_hi), (left_lo, left_hi) = move.entered, move.left
            left = hist_select("started_at >= $l0 AND started_at < $l1")
            left = f"(SELECT parent, region, bin, n FROM ({left}))"
            delta = f"{both_levels(counted)} UNION ALL {both_levels(left, '-')}"
            parameters = {
                "lo": at(enter_lo),
                "hi": at(enter_hi),
                "l0": at(left_lo),
                "l1": at(left_hi),
            }
    elif move.old is None:
        # The days the window touches, less what the last of them holds after its end.
        last = (move.end - 1) // DAY
        days = f"(SELECT parent, region, bin, n FROM {tables.hist} WHERE day BETWEEN $d0 AND $d1)"
        delta = f"{both_levels(days)} UNION ALL {both_levels(counted, '-')}"
        parameters = {
            "d0": move.start // DAY,
            "d1": last,
            "lo": at(move.end),
            "hi": at(max(move.end, min(hist_to, (last + 1) * DAY))),
        }
    else:
        # The rows that entered are counted from raw rows; the days that left (whole days: a
        # calendar window starts at midnight) are read back from the daily histograms.
        (enter_lo, enter_hi), (left_lo, left_hi) = move.entered, move.left
        left = f"(SELECT parent, region, bin, n FROM {tables.hist} WHERE day >= $l0 AND day < $l1)"
        delta = f"{both_levels(counted)} UNION ALL {both_levels(left, '-')}"
        parameters = {
            "lo": at(enter_lo),
            "hi": at(enter_hi),
            "l0": left_lo // DAY,
            "l1": left_hi // DAY,
        }
    connection.execute(f"CREATE OR REPLACE TEMP TABLE site_delta AS {delta}", parameters)
    move_histogram(connection, tables, name, fresh=move.old is None)
    connection.execute("DROP TABLE site_delta")
    connection.execute("DROP TABLE site_moved")


def _sketch_figures(
    connection: Connection, tables: Tables, move: Move, target: str, source: str
) -> None:
    """A window's figures into the rows `target`: runs from the rollup (moved from the rows
    `source`), quantiles from its histogram."""
    name = move.window.name
    if move.old is None:
        runs = f"""SELECT parent, region, sum(runs) AS runs, sum(passes) AS passes
                   FROM {tables.rollup} WHERE bucket >= $s AND bucket < $e
                   GROUP BY GROUPING SETS ((parent, region), (parent))"""
        parameters: dict[str, object] = {"s": move.start, "e": move.end}
    else:
        (enter_lo, enter_hi), (left_lo, left_hi) = move.entered, move.left
        runs = f"""SELECT parent, region, sum(runs) AS runs, sum(passes) AS passes FROM (
                       SELECT parent, region, runs, passes FROM {tables.window}
                       WHERE win = $source
                       UNION ALL
                       SELECT parent, region, sum(sign * runs), sum(sign * passes) FROM (
                           SELECT parent, region, runs, passes,
                                  CASE WHEN bucket >= $e0 THEN 1 ELSE -1 END AS sign
                           FROM {tables.rollup}
                           WHERE (bucket >= $e0 AND bucket < $e1)
                              OR (bucket >= $s0 AND bucket < $s1))
                       GROUP BY GROUPING SETS ((parent, region), (parent)))
                   GROUP BY parent, region HAVING sum(runs) > 0"""
        parameters = {
            "source": source,
            "e0": enter_lo,
            "e1": enter_hi,
            "s0": left_lo,
            "s1": left_hi,
        }
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE site_runs AS {runs}",
        parameters,
    )
    store_window_figures(connection, tables, name, target, every_key=True)
    connection.execute("DROP TABLE site_runs")


def _chart(connection: Connection, tables: Tables, move: Move) -> None:
    """Chart points from the rollup buckets wholly inside the window (the highest bucket p95
    of each slot), recomputing only the slots whose buckets changed."""
    window, name = move.window, move.window.name
    step = window.step
    if move.old is None:
        connection.execute(f"DELETE FROM {tables.chart} WHERE win = $w", {"w": name})
        which = "TRUE"
        parameters: dict[str, object] = {}
    else:
        # Slots starting before the new start lost buckets; the slot of the last complete
        # bucket before the old end, and every later one, may have gained some.
        tail = (move.old[1] - ROLLUP_STEP) // step * step
        connection.execute(
            f"DELETE FROM {tables.chart} WHERE win = $w AND (slot < $s OR slot >= $tail)",
            {"w": name, "s": move.start, "tail": tail},
        )
        which = _MOVED_SLOTS
        parameters = {"tail": tail}
    connection.execute(
        f"""INSERT INTO {tables.chart} (win, parent, region, slot, p95, shown)
            SELECT $w, * FROM ({_slots_select(tables, which)})""",
        {
            "w": name,
            "s": move.start,
            "e": move.end,
            "step": step,
            "bucket": ROLLUP_STEP,
            **parameters,
        },
    )


# The slots `_chart` recomputes after a move (`$tail`: from the slot of the old end's last
# bucket on), and the slots before the new start that lost buckets.
_MOVED_SLOTS = "(bucket // $step * $step < $s OR bucket // $step * $step >= $tail)"


def _slots_select(tables: Tables, which: str) -> str:
    """SQL: chart points (parent, region, slot, p95, shown) of the rollup buckets wholly in
    [$s, $e) matching `which`, each slot the highest bucket p95 (slots of $step s)."""
    return f"""SELECT parent, region, slot, p95, {SHOWN_SQL.format("p95")} AS shown FROM (
                   SELECT parent, region, bucket // $step * $step AS slot, max(p95) AS p95
                   FROM {tables.rollup}
                   WHERE bucket >= $s AND bucket + $bucket <= $e AND {which}
                   GROUP BY parent, region, slot)"""


def _joined(points: str) -> str:
    """SQL: chart points (parent, region, slot, p95, shown) joined into one `site_series`
    row per series, but its window: the first slot and how many, the values shown by slot,
    the highest p95 and the last slot's, and every slot when there are gaps ($step s)."""
    return f"""SELECT parent, region, min(slot), count(*),
                      string_agg(shown, ',' ORDER BY slot), max(p95), arg_max(p95, slot),
                      CASE WHEN (max(slot) - min(slot)) // $step + 1 <> count(*)
                           THEN list(slot ORDER BY slot) END
               FROM ({points}) GROUP BY parent, region"""


def series_staged(window: str) -> str:
    """The `site_meta` key saying which chart move a window's staged series is for."""
    return f"window.{window}.series.staged"


def staged_series_token(window: str) -> str:
    """The `site_meta` key of the token a window's staged series will be published under
    (`kept.py`): a builder reads them between builds (`SiteBuilder.stage_ahead`), and the
    build publishing them finds them kept."""
    return f"window.{window}.series.staged.token"


def _described(move: Move) -> str:
    return f"{move.old}>{move.start}:{move.end}"


def _stage_series(connection: Connection, tables: Tables, meta: dict[str, str], move: Move) -> str:
    """Join, into the staged rows of `site_series`, the series the window will have once the
    figures staged for `move` are published: its chart points then are the published ones
    still inside the new bounds and the slots `_chart` recomputes from the rollups. Joining a
    window's series took 0.04-0.1 s of the build publishing it; this is between builds.

    Returns:
        The chart move the series are for (`_described`), or "" when none was staged: a
        tiered window, or a chart that will be recomputed from scratch. The build publishing
        the figures takes the staged series only when its chart move is the same; late rows
        make it another (recomputed from scratch) and `_series` joins them then.
    """
    window, name = move.window, move.window.name
    connection.execute(
        f"DELETE FROM {tables.series} WHERE win = $staged", {"staged": staged_name(name)}
    )
    chart = moved(window, parse(meta.get(f"window.{name}")), (move.start, move.end), None)
    if window.tier or chart.old is None:
        return ""
    step = window.step
    tail = (chart.old[1] - ROLLUP_STEP) // step * step
    # The points `_chart` keeps, and those it recomputes.
    points = f"""SELECT parent, region, slot, p95, shown FROM {tables.chart}
                 WHERE win = $w AND slot >= $s AND slot < $tail
                 UNION ALL {_slots_select(tables, _MOVED_SLOTS)}"""
    connection.execute(
        f"INSERT INTO {tables.series} SELECT $staged, * FROM ({_joined(points)})",
        {
            "w": name,
            "staged": staged_name(name),
            "s": chart.start,
            "e": chart.end,
            "tail": tail,
            "step": step,
            "bucket": ROLLUP_STEP,
        },
    )
    return _described(chart)


def _series(connection: Connection, tables: Tables, window: Window) -> None:
    """Join a window's chart points into one row per series (`site_series`).

    Every build draws the charts of every canary with a new run, which in a busy fleet is
    all of them: joining their 1.5 million points on each build took 0.2-0.3 s, once per
    publish of the window it is a tenth of that each minute.
    """
    connection.execute(f"DELETE FROM {tables.series} WHERE win = $w", {"w": window.name})
    points = f"SELECT parent, region, slot, p95, shown FROM {tables.chart} WHERE win = $w"
    connection.execute(
        f"INSERT INTO {tables.series} SELECT $w, * FROM ({_joined(points)})",
        {"w": window.name, "step": window.step},
    )
