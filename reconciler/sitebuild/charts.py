"""Inline SVG latency charts: one p95 line per region, with a legend and a data table.

Everything is formatted here, in Python, so templates only place ready strings (measured:
pre-formatted points render twice as fast). A window move redraws a thousand charts, so a
chart costs little: its values arrive formatted (`site_chart.shown`, once per point), the
path data are the slot numbers and those values, placed by one SVG transform, and the data
table is one `%` over every value, from format strings cached per window frame. The SVG carries a
`<title>` and a `<desc>`; the table holds the same numbers as text.

Most of a chart stays as it is from one build to the next: the stored points before the slot
holding the window's stored end (its *seam*) change only when the window moves. A builder
that keeps them draws that part once per move (`draw_head`, between builds) and each build
draws only the points from the seam on (a few per region), against 50-90 µs a chart drawn
whole; without a head (a one-off build, the build publishing a window's move) the chart is
drawn whole, to the same bytes.

Path data: each run of points in consecutive slots is one subpath (`M` then `L`s); a run of
one point ends with a zero-length segment (`h0`), which round caps show as a dot.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from markupsafe import Markup, escape

from reconciler.sitebuild.formatting import millis
from reconciler.sitebuild.windows import DAY, Window

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 80, 12, 12, 30
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Series styles cycle through this many colour/dash classes (s0 … s7 in site.css).
STYLES = 8
_LEGEND = '<li data-region="{}"><span class="swatch {}" aria-hidden="true"></span>{}</li>\n'


class Chart(NamedTuple):
    """A rendered chart: the SVG, the legend entries and the data table (a tuple: one is made
    for each canary page drawn, thousands a build)."""

    svg: Markup
    legend: Markup  # the legend's items: a swatch of each region's style and its name
    head: Markup  # the table's header cells
    body: Markup  # the table's rows
    empty: bool


class Points(NamedTuple):
    """One region's chart points (a named tuple: 75,000 are made each build, at half the
    cost of a frozen dataclass).

    Attributes:
        slots: indexes into the window's frame, ascending (a `range` when there is no gap).
        shown: each slot's p95 as the table shows it (ms, `%.1f`), joined by commas.
        highest: the highest p95 (ms).
        latest: the last slot's p95 (ms).
    """

    slots: Sequence[int]
    shown: str
    highest: float
    latest: float


@functools.lru_cache(maxsize=1024)
def _html(text: str) -> str:
    """`text` escaped for HTML, remembered: a chart names each region four times, and every
    chart names the same few regions."""
    return str(escape(text))


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def _slot_label(window: Window, moment: int) -> str:
    when = datetime.fromtimestamp(moment, UTC)
    if window.step % DAY == 0:
        return when.strftime("%d %b %Y")
    return when.strftime("%H:%M" if window.days is None else "%d %b %H:%M")


@functools.lru_cache(maxsize=8)
def _row_heads(window: Window, start: int, slots: int) -> tuple[str, ...]:
    return tuple(
        f'<tr><th scope="row"><time datetime="'
        f'{datetime.fromtimestamp(start + i * window.step, UTC):%Y-%m-%dT%H:%MZ}">'
        f"{_slot_label(window, start + i * window.step)}</time></th>"
        for i in range(slots)
    )


@functools.lru_cache(maxsize=8)
def _x_axis(window: Window, start: int, slots: int) -> str:
    """Tick labels: every 6 hours (24h), every day (7d), every 5 days (30d), every 15 days
    (90d), every 60 days (365d)."""
    if window.days is None:
        every = 6 * 3600
    else:
        every = next(
            (
                each
                for most, each in ((7, DAY), (30, 5 * DAY), (90, 15 * DAY))
                if window.days <= most
            ),
            60 * DAY,
        )
    parts = []
    first = -(-start // every) * every  # ticks on whole 6 hours, days, 5 days
    end = start + slots * window.step
    last = LEFT
    for moment in range(first, end, every):
        x = last = round(LEFT + (moment - start) / (slots * window.step) * PLOT_W)
        # The 24 h chart's midnight says which day begins there, its other ticks the time.
        fmt = "%H:%M" if window.days is None and moment % DAY else "%d %b"
        label = datetime.fromtimestamp(moment, UTC).strftime(fmt)
        parts.append(
            f'<line class="tick" x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + PLOT_H}"/>'
            f'<text x="{x}" y="{HEIGHT - 8}">{label}</text>'
        )
    if WIDTH - RIGHT - last >= _END_LABEL_ROOM:  # the window's end: the build's own time
        label = datetime.fromtimestamp(end, UTC).strftime(
            "%H:%M" if window.days is None else "%d %b"
        )
        parts.append(f'<text class="end" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}">{label} UTC</text>')
    return "".join(parts)


# Pixels free after the last tick for the end's label ("17:05 UTC") not to run into it.
_END_LABEL_ROOM = 110


@functools.lru_cache(maxsize=64)
def _y_axis(top: float) -> str:
    """Grid lines and labels at 0, half and the top of the scale (a few scales in all)."""
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        y = round(TOP + PLOT_H * (1 - fraction))
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>'
            f'<text class="y" x="{LEFT - 6}" y="{y + 4}">{top * fraction:,g} ms</text>'
        )
    return "".join(parts)


@functools.lru_cache(maxsize=256)
def _run_format(first: int, count: int) -> str:
    """Path data through `count` points in a row from slot `first`, without the command
    before the first (each `slot,%s`)."""
    return "L".join(f"{slot},%s" for slot in range(first, first + count))


def _trace(
    slots: Sequence[int], values: Sequence[str], previous: int = -2, lone: bool = False
) -> tuple[str, int, bool]:
    """Path data through the points (x: slot index, y: p95 ms as formatted), after a path
    whose last point is in slot `previous` (-2: none) and whose last run is one point
    (`lone`): a point in the next slot continues that run. Returns the data, the last slot
    and whether the last run is one point; the `h0` closing a last run of one point is left
    to the caller (the next points may continue it)."""
    if not slots:
        return "", previous, lone
    if slots[-1] - slots[0] == len(slots) - 1:  # no gap: the common case
        data = _run_format(slots[0], len(slots)) % tuple(values)
        if slots[0] == previous + 1:
            return "L" + data, slots[-1], False
        return ("h0" if lone else "") + "M" + data, slots[-1], len(slots) == 1
    parts: list[str] = []
    for slot, value in zip(slots, values, strict=True):
        if slot == previous + 1:
            parts.append(f"L{slot},{value}")
            lone = False
        else:
            if lone:
                parts.append("h0")
            parts.append(f"M{slot},{value}")
            lone = True
        previous = slot
    return "".join(parts), previous, lone


@functools.lru_cache(maxsize=64)
def _rows_format(
    window: Window, start: int, slots: int, first: int, count: int, columns: int
) -> str:
    """The data table's rows for slots first … first + count - 1, `columns` cells each."""
    heads = _row_heads(window, start, slots)
    cells = "<td>%s</td>" * columns + "</tr>"
    return "".join(heads[slot] + cells for slot in range(first, first + count))


def _body(
    window: Window,
    start: int,
    frame: int,
    columns: Sequence[tuple[Sequence[int], Sequence[str]]],
) -> str:
    """The data table's rows: one per slot with data, one cell per region (values formatted)."""
    first = columns[0][0] if columns else ()
    same = bool(first) and all(slots == first for slots, _ in columns)
    if same and first[-1] - first[0] == len(first) - 1:  # the same slots everywhere, no gap
        rows = _rows_format(window, start, frame, first[0], len(first), len(columns))
        by_slot = zip(*(values for _, values in columns), strict=True)
        return rows % tuple(itertools.chain.from_iterable(by_slot))
    heads = _row_heads(window, start, frame)
    lookups = [dict(zip(slots, values, strict=True)) for slots, values in columns]
    used = sorted({slot for slots, _ in columns for slot in slots})
    return "".join(
        heads[slot]
        + "".join(
            [f"<td>{lookup[slot]}</td>" if slot in lookup else "<td>—</td>" for lookup in lookups]
        )
        + "</tr>"
        for slot in used
    )


@dataclass(frozen=True)
class Head:
    """A chart's stored points before its seam, drawn ahead (`draw_head`).

    Attributes:
        regions: the regions it was drawn for, in legend order (a build drawing the chart
            for others draws it whole).
        seam: the slot holding the window's stored end (`seam`); the head has the slots
            before it.
        paths: per region, the path data through its slots before the seam (`_trace`: no
            `h0` closing its last run).
        ends: per region, its last slot before the seam (-2: none).
        lone: per region, whether its last run before the seam is one point.
        rows: the data table's rows of the slots before the seam.
    """

    regions: tuple[str, ...]
    seam: int
    paths: tuple[str, ...]
    ends: tuple[int, ...]
    lone: tuple[bool, ...]
    rows: str


def seam(window: Window, start: int, end: int) -> int:
    """The slot of a window's chart (frame from `start`) holding its stored `end`: every
    build draws the points from it on (the window's tail, `live.py`, starts there)."""
    return (end // window.step * window.step - window.frame(start)) // window.step


def _split(points: Points | None, below: int, tail: Points | None) -> _Part:
    """A region's points from slot `below` on: its stored ones up to its tail's first slot
    (a tail slot is the whole slot), then its tail's."""
    slots: Sequence[int] = ()
    values: list[str] = []
    if points is not None and points.slots:
        stored = points.slots
        low = bisect.bisect_left(stored, below) if below > stored[0] else 0
        high = bisect.bisect_left(stored, tail.slots[0]) if tail is not None else len(stored)
        if high > low:
            if low == 0:
                values = points.shown.split(",")[:high]
            else:
                values = points.shown.rsplit(",", len(stored) - low)[1:][: high - low]
            slots = stored[low:high]
    if tail is not None and tail.slots:
        if not slots:
            slots, values = tail.slots, tail.shown.split(",")
        else:
            values += tail.shown.split(",")
            joined = isinstance(slots, range) and isinstance(tail.slots, range)
            if joined and slots[-1] + 1 == tail.slots[0]:
                slots = range(slots[0], tail.slots[-1] + 1)
            else:
                slots = [*slots, *tail.slots]
    return slots, values


_Part = tuple[Sequence[int], list[str]]


def draw_head(
    window: Window, start: int, regions: Sequence[str], stored: Mapping[str, Points], at: int
) -> Head:
    """The part of a chart before slot `at` (its `seam`), from its stored points (`start`:
    the chart frame's start, `Window.frame`)."""
    paths, ends, lone, columns = [], [], [], []
    for region in regions:
        points = stored.get(region)
        slots: Sequence[int] = ()
        values: list[str] = []
        if points is not None and points.slots:
            high = bisect.bisect_left(points.slots, at)
            slots = points.slots[:high]
            values = points.shown.split(",")[:high]
        data, end, single = _trace(slots, values)
        paths.append(data)
        ends.append(end)
        lone.append(single)
        columns.append((slots, values))
    rows = _body(window, start, max(window.slots(), at), columns)
    return Head(tuple(regions), at, tuple(paths), tuple(ends), tuple(lone), rows)


def latency_chart(
    window: Window,
    start: int,
    regions: Sequence[str],
    stored: Mapping[str, Points] | None,
    tails: Mapping[str, Points] | None,
    ident: str,
    caption: str,
    head: Head | None = None,
) -> Chart:
    """The p95 chart of one canary over one window.

    Args:
        window: the window (its step and frame).
        start: the chart frame's start (s, `Window.frame`); slot i starts at start + i · step.
        regions: the regions to draw, in legend order (a region without points is listed).
        stored: per region, its stored points (`queries.stored_series`).
        tails: per region, the window's tail: the points from its seam on, which replace
            the stored ones in their slots (`queries.chart_tails`).
        ident: a page-unique id prefix for the title and description.
        caption: what the chart shows, for the title and the table caption.
        head: the part before the seam, drawn ahead for these regions (`draw_head`); None,
            or drawn for other regions: the chart is drawn whole.
    """
    stored = stored or {}
    tails = tails or {}
    if head is not None and (
        head.regions != tuple(regions)
        or any(tail.slots and tail.slots[0] < head.seam for tail in tails.values())
    ):
        head = None
    below = head.seam if head is not None else 0
    # The frame's slots, and one more for results started past a calendar window's last day
    # (in the minutes before the window moves to the new day).
    slots = window.slots()
    highest = 0.0
    parts: list[_Part] = []
    summary = []
    for index, region in enumerate(regions):
        points, tail = stored.get(region), tails.get(region)
        part = _split(points, below, tail)
        parts.append(part)
        drawn = [p for p in (points, tail) if p is not None and p.slots]
        if not drawn:
            summary.append(f"{region}: no data")
            continue
        top = max(p.highest for p in drawn)
        latest = drawn[-1].latest  # the tail's when there is one
        highest = max(highest, top)
        last = part[0][-1] if part[0] else head.ends[index] if head is not None else -1
        slots = max(slots, last + 1)
        summary.append(f"{region}: highest {millis(top)}, latest {millis(latest)}")
    top = _nice(highest)
    # Points are (slot, p95 ms); one transform maps them onto the plot, and the lines keep
    # their width (`vector-effect` in site.css). No coordinate is computed per point here.
    step = PLOT_W / slots
    plot = f"matrix({step:.6g} 0 0 {-PLOT_H / top:.6g} {LEFT + step / 2:.6g} {TOP + PLOT_H})"
    paths = []
    for index, region in enumerate(regions):
        part_slots, values = parts[index]
        if head is not None:
            data, _, lone = _trace(part_slots, values, head.ends[index], head.lone[index])
            data = head.paths[index] + data
        else:
            data, _, lone = _trace(part_slots, values)
        if not data:
            continue
        style = f"s{index % STYLES}"
        data += "h0" if lone else ""
        paths.append(f'<path class="line {style}" data-region="{_html(region)}" d="{data}"/>')
        if "h0" in data:
            paths.append(_dots(style, region, data))
    svg = Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc">'
        f'<title id="{ident}-title">{escape(caption)}</title>'
        f'<desc id="{ident}-desc">{escape("; ".join(summary))}.</desc>'
        f'<g class="axes" aria-hidden="true">{_y_axis(top)}{_x_axis(window, start, slots)}</g>'
        f'<g transform="{plot}">{"".join(paths)}</g></svg>'
    )
    legend, table_head = _legend_and_head(tuple(regions))
    body = _body(window, start, slots, parts)
    if head is not None:
        body = head.rows + body
    return Chart(svg, legend, table_head, Markup(body), not body)


# A point with no neighbour in the path data (`_trace`): a zero-length subpath.
_LONE = re.compile(r"M[^MLh]*h0")


def _dots(style: str, region: str, data: str) -> str:
    """The points of a path that have no neighbour, again as dots (`.dot` in site.css): a
    zero-length subpath of the line alone is a speck as wide as the line (a chart's only
    point, in its first minutes)."""
    lone = "".join(_LONE.findall(data))
    return f'<path class="dot {style}" data-region="{_html(region)}" d="{lone}"/>'


@functools.lru_cache(maxsize=256)
def _legend_and_head(regions: tuple[str, ...]) -> tuple[Markup, Markup]:
    """The legend's items and the table's header cells: the same for every canary that runs
    in the same regions."""
    legend = "".join(
        _LEGEND.format(_html(region), f"s{index % STYLES}", _html(region))
        for index, region in enumerate(regions)
    )
    head = "".join(f'<th scope="col">{_html(region)} (ms)</th>' for region in regions)
    return Markup(legend), Markup(head)
