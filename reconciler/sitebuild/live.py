"""Every window's open part: the results started since its stored end, added at each build.

Window figures are stored up to a step boundary behind the clock (`figures.py`): up to 16
minutes for 24 hours and 2 hours for 7 and 30 days. Pages showing only them would hide the
newest results (an outage a minute ago, a new canary's first runs), so each build adds what
started since the published end of each window, read from raw rows: the last two hours at
most, a scan that zone maps keep to them, grouped once by part (`_part_sql`) and latency bin.

* `site_live`: for each canary and region (and each canary, region NULL) with rows in a
  window's open part, the window's figures with them: the stored sums plus the open rows'
  runs and passes, and quantiles read off the window's histogram plus the open rows' bins
  (the same histograms as the stored figures).
* `site_tail`: chart points from the slot holding the window's stored end on, from the
  rollup buckets (a refresh keeps them current up to the newest row, the open bucket
  included), so a chart shows a point a minute after the first results.

Both are temporary tables of the connection that reads the build (`SiteBuilder.collect`):
computed from committed tables, never stored, so they hold the writer (and the server's
ingest) for no time and add nothing to the state file's log. Pages read the published
figures overlaid with them.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from reconciler.core.outcomes import SQL_PASSES, SQL_RUNS
from reconciler.core.sketch import BIN_SQL, Histogram, merged_quantiles, packed
from reconciler.sitebuild.kept import Kept, days_token, histogram_token
from reconciler.sitebuild.moves import Bounds, parse
from reconciler.sitebuild.tables import (
    LIVE_DDL,
    SHOWN_SQL,
    US,
    WINDOW_COLUMNS,
    Tables,
    at,
    hist_select,
    read_meta,
)
from reconciler.sitebuild.tiered import today_points
from reconciler.sitebuild.windows import DAY, WINDOWS, Window, floor_to
from reconciler.store import days as tier_days
from reconciler.store.db import Connection


def refresh_live(connection: Connection, tables: Tables, kept: Kept | None = None) -> None:
    """Compute `temp.site_live` and `temp.site_tail` for the published bounds (reads only,
    after the rollups and the windows were brought up to date and committed).

    Args:
        kept: the windows' histograms as the builder read them last (`kept.py`); None reads
            them on every call.
    """
    kept = Kept() if kept is None else kept
    meta = read_meta(connection, tables)
    for name, columns in LIVE_DDL.items():
        connection.execute(f"CREATE OR REPLACE TEMP TABLE site_{name} ({columns})")
    published = [(window, parse(meta.get(f"window.{window.name}"))) for window in WINDOWS]
    hist_to = int(meta.get("hist_to", "0"))
    ends = [bounds[1] for _, bounds in published if bounds is not None]
    if not ends:
        return
    if any(window.tier for window, bounds in published if bounds is not None):
        # The tiered windows' chart point of today reads the rows after the daily
        # histogram's last block (`tiered.today_points`).
        ends.append(hist_to)
    # One pass groups the open rows by the part of it they fall in: the parts start at each
    # window's published and staged ends, at `hist_to` and at midnight, all that a window
    # or today's chart point tells apart (rather than by 15-minute bucket: a third of the
    # groups, at 0.05-0.1 s a build fewer).
    cuts = set(ends)
    for window, bounds in published:
        staged = parse(meta.get(f"window.{window.name}.staged"))
        if bounds is not None and staged is not None:
            cuts.add(staged[1])
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_open AS
            SELECT parent, region, {_part_sql(sorted(cuts))} AS bucket, {BIN_SQL} AS bin,
                   count(*) AS n, {SQL_RUNS} AS runs, {SQL_PASSES} AS passes
            FROM results WHERE started_at >= $since
            GROUP BY parent, region, bucket, bin""",
        {"since": at(min(ends))},
    )
    today: int | None = None  # the day `site_today` was computed from
    tiered: list[str] = []  # the windows whose tail is `site_today`'s points
    shared: tuple[int, int] | None = None  # the open part the `site_open_*` tables hold
    opened: Histogram | None = None  # their latency counts, read once
    for window, bounds in published:
        if bounds is None:
            continue
        latest = parse(meta.get(f"window.{window.name}.staged")) or bounds
        # Windows with the same ends and nothing left between their published and latest
        # bounds (7 d, 30 d, 90 d and 365 d, most minutes) have the same open part.
        same = (bounds[1], latest[1]) if latest[0] == bounds[0] else None
        if same is None or same != shared:
            _drop_open(connection)
            _figures(connection, tables, window, bounds, latest)
            opened = _open_bins(connection)
        assert opened is not None  # the first window always makes the open part's tables
        token = meta.get(histogram_token(window.name))
        _insert_window(
            connection,
            tables,
            window,
            _kept_histogram(connection, tables, window, kept, token),
            opened,
        )
        shared = same
        if not window.tier:
            _tail(connection, tables, window, *bounds)
            continue
        if today != bounds[1] // DAY:  # the tiered windows share it nearly always
            _today_tails(connection, tables, tiered)
            today_points(connection, tables, bounds[1], hist_to, kept, meta.get(days_token()))
            today, tiered = bounds[1] // DAY, []
        tiered.append(window.name)
    _today_tails(connection, tables, tiered)
    connection.execute("DROP TABLE site_open")
    connection.execute("DROP TABLE IF EXISTS site_today")
    _drop_open(connection)


def _part_sql(cuts: list[int]) -> str:
    """SQL: the start (s) of the part of the open rows a row falls in, between `cuts`
    (ascending, the first at or before every row) and midnights."""
    when = " ".join(f"WHEN epoch_us(started_at) >= {cut * US} THEN {cut}" for cut in cuts[::-1])
    return f"greatest(CASE {when} END, epoch_us(started_at) // {DAY * US} * {DAY})"


def _figures(
    connection: Connection, tables: Tables, window: Window, published: Bounds, latest: Bounds
) -> None:
    """The open part's tables (`_open_tables`) of one window: the rows started since its
    published end, to add to its published figures (`_insert_window`).

    The window's histogram (`site_whist`) is at the `latest` bounds, staged ones when a
    build computed figures for the next publish (`moves.py`): the published bounds' counts
    are those plus what left the window since (a rolling window's minutes of raw rows, a
    calendar window's days), less what entered, which the open part holds anyway.
    """
    (start, end), (latest_start, latest_end) = published, latest
    left, parameters = _left(connection, tables, window, start, latest_start)
    _open_tables(
        connection,
        tables,
        "SELECT parent, region, runs, passes FROM site_open WHERE bucket >= $end",
        f"""SELECT parent, region, bin, n FROM site_open WHERE bucket >= $latest
            UNION ALL
            {left}""",
        {"end": end, "latest": latest_end, **parameters},
    )


def _open_tables(
    connection: Connection, tables: Tables, sums: str, bins: str, parameters: dict[str, object]
) -> None:
    """An open part's sums and latency counts by key (`site_open_sums`, `site_open_keys`,
    `site_open_bins`): the same for windows with the same open part (the tiered ones)."""
    used = {key: value for key, value in parameters.items() if f"${key}" in sums}
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_open_sums AS
            SELECT parent, region, sum(runs) AS runs, sum(passes) AS passes FROM ({sums})
            GROUP BY GROUPING SETS ((parent, region), (parent))""",
        used,
    )
    # Keys of the window histogram; a key new since the last move has no histogram rows, so
    # it takes a negative id of this build's own rather than one written to `site_keys`.
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_open_keys AS
            SELECT coalesce(k.id, -row_number() OVER (ORDER BY o.parent, o.region)) AS id,
                   o.parent, o.region, o.runs, o.passes
            FROM site_open_sums o LEFT JOIN {tables.keys} k
              ON k.parent = o.parent AND k.region IS NOT DISTINCT FROM o.region"""
    )
    used = {key: value for key, value in parameters.items() if f"${key}" in bins}
    # Rows' regions are never NULL: the grouping sets give one row a key and bin.
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_open_bins AS
            SELECT k.id, b.bin, b.n FROM (
                SELECT parent, region, bin, sum(n) AS n FROM ({bins})
                GROUP BY GROUPING SETS ((parent, region, bin), (parent, bin))) b
            JOIN site_open_keys k
              ON k.parent = b.parent AND k.region IS NOT DISTINCT FROM b.region""",
        used,
    )


def _open_bins(connection: Connection) -> Histogram:
    """The open part's latency counts by key (`site_open_bins`), read once for the windows
    that share it."""
    opened = connection.execute("SELECT id, bin, n FROM site_open_bins ORDER BY id, bin")
    ids, bins, counts = (column.astype(np.int64) for column in opened.fetchnumpy().values())
    return Histogram.of(packed(ids, bins), counts)


def _today_tails(connection: Connection, tables: Tables, windows: list[str]) -> None:
    """`site_tail` rows of the tiered `windows`: `site_today`'s points, in one statement."""
    if not windows:
        return
    connection.execute(
        f"""INSERT INTO {tables.tail} (win, parent, region, slot, p95, shown)
            SELECT w.win, t.parent, t.region, t.slot, t.p95, {SHOWN_SQL.format("t.p95")}
            FROM site_today t CROSS JOIN (SELECT unnest($w::VARCHAR[]) AS win) w""",
        {"w": windows},
    )


def _insert_window(
    connection: Connection, tables: Tables, window: Window, histogram: Histogram, opened: Histogram
) -> None:
    """`site_live` rows of one window from the open part's tables (`_open_tables`): the
    quantiles of its `histogram` (as kept while its token stands) plus the open part's
    counts (`opened`, `sketch.merged_quantiles`), the sums added."""
    ids, _, (p50, p95, p99) = merged_quantiles(histogram, opened)
    connection.register(
        "site_open_quantiles", pa.table({"id": ids, "p50": p50, "p95": p95, "p99": p99})
    )
    try:
        connection.execute(
            f"""INSERT INTO {tables.live} ({WINDOW_COLUMNS})
                SELECT $w, o.parent, o.region, o.runs + coalesce(s.runs, 0),
                       o.passes + coalesce(s.passes, 0), q.p50, q.p95, q.p99
                FROM site_open_keys o
                LEFT JOIN {tables.window} s
                  ON s.win = $w AND s.parent = o.parent
                 AND s.region IS NOT DISTINCT FROM o.region
                LEFT JOIN site_open_quantiles q USING (id)""",
            {"w": window.name},
        )
    finally:
        connection.unregister("site_open_quantiles")


def keep_histograms(connection: Connection, tables: Tables, kept: Kept) -> None:
    """Read into `kept` the windows' histograms it does not hold under their current token:
    after a move was staged (between builds), so that the build publishing it finds its
    histogram read (30 ms a window at 1,000 canaries)."""
    meta = read_meta(connection, tables)
    for window in WINDOWS:
        token = meta.get(histogram_token(window.name))
        if token:
            _kept_histogram(connection, tables, window, kept, token)


def _kept_histogram(
    connection: Connection, tables: Tables, window: Window, kept: Kept, token: str | None
) -> Histogram:
    """A window's histogram as `kept` holds it under `token`, read when it does not."""
    return kept.get(f"whist.{window.name}", token, partial(_histogram, connection, tables, window))


def _histogram(connection: Connection, tables: Tables, window: Window) -> Histogram:
    """A window's whole histogram, indexed for adding open parts to it."""
    rows = connection.execute(
        f"SELECT id, bin, n FROM {tables.whist} WHERE win = $w ORDER BY id, bin",
        {"w": window.name},
    ).fetchnumpy()
    keys = packed(rows["id"].astype(np.int64), rows["bin"].astype(np.int64))
    return Histogram.of(keys, rows["n"].astype(np.int64))


def _drop_open(connection: Connection) -> None:
    for table in ("site_open_sums", "site_open_keys", "site_open_bins"):
        connection.execute(f"DROP TABLE IF EXISTS {table}")


def _left(
    connection: Connection, tables: Tables, window: Window, start: int, latest_start: int
) -> tuple[str, dict[str, object]]:
    """SQL selecting the (parent, region, bin, n) of the rows in [start, latest_start): what
    left the window between its published and its latest bounds."""
    if latest_start == start:
        return "SELECT parent, region, bin, n FROM site_open WHERE false", {}
    if window.tier:
        tier, parameters = tier_days.relation(connection, start // DAY, latest_start // DAY)
        return (
            f"""SELECT parent, region, unnest(bins) AS bin, unnest(counts) AS n
                FROM {tier}""",
            parameters,
        )
    if window.days is None:
        counted = hist_select("started_at >= $l0 AND started_at < $l1")
        return f"SELECT parent, region, bin, n FROM ({counted})", {
            "l0": at(start),
            "l1": at(latest_start),
        }
    days = f"SELECT parent, region, bin, n FROM {tables.hist} WHERE day >= $d0 AND day < $d1"
    return days, {"d0": start // DAY, "d1": latest_start // DAY}


def _tail(connection: Connection, tables: Tables, window: Window, start: int, end: int) -> None:
    """`site_tail` rows of one window: every slot from the one holding `end` on, whole (a
    30-day slot of 6 hours may hold stored buckets too)."""
    connection.execute(
        f"""INSERT INTO {tables.tail} (win, parent, region, slot, p95, shown)
            SELECT $w, parent, region, slot, p95, {SHOWN_SQL.format("p95")} FROM (
                SELECT parent, region, bucket // $step * $step AS slot, max(p95) AS p95
                FROM {tables.rollup} WHERE bucket >= $since
                GROUP BY parent, region, slot)""",
        {
            "w": window.name,
            "step": window.step,
            "since": max(start, floor_to(end, window.step)),
        },
    )
