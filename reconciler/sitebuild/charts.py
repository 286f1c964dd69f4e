"""Inline SVG latency charts: one p95 line per region, with a legend and a data table.

Everything is formatted here, in Python, so templates only place ready strings (measured:
pre-formatted points render twice as fast). A window move redraws a thousand charts, so a
chart costs little: its values arrive formatted (`site_chart.shown`, once per point), the
path data are the slot numbers and those values, placed by one SVG transform, and the data
table is one `%` over every value, from format strings cached per window frame. The SVG carries a
`<title>` and a `<desc>`; the table holds the same numbers as text.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from reconciler.sitebuild.formatting import millis
from reconciler.sitebuild.windows import DAY, Window

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 80, 12, 12, 30
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Series styles cycle through this many colour/dash classes (s0 … s7 in site.css).
STYLES = 8
_LEGEND = '<li data-region="{}"><span class="swatch {}" aria-hidden="true"></span>{}</li>\n'


@dataclass(frozen=True)
class Chart:
    """A rendered chart: the SVG, the legend entries and the data table."""

    svg: Markup
    legend: Markup  # the legend's items: a swatch of each region's style and its name
    head: Markup  # the table's header cells
    body: Markup  # the table's rows
    empty: bool


@dataclass(frozen=True)
class Points:
    """One region's chart points.

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
    fmt = "%H:%M" if window.days is None else "%d %b"
    parts = []
    first = -(-start // every) * every  # ticks on whole 6 hours, days, 5 days
    for moment in range(first, start + slots * window.step, every):
        x = round(LEFT + (moment - start) / (slots * window.step) * PLOT_W)
        label = datetime.fromtimestamp(moment, UTC).strftime(fmt)
        parts.append(
            f'<line class="tick" x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + PLOT_H}"/>'
            f'<text x="{x}" y="{HEIGHT - 8}">{label}</text>'
        )
    return "".join(parts)


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


@functools.lru_cache(maxsize=64)
def _run_format(first: int, count: int) -> str:
    """Path data through `count` points in a row from slot `first` (each `slot,%s`)."""
    points = "L".join(f"{slot},%s" for slot in range(first, first + count))
    return "M" + points + ("h0" if count == 1 else "")


def _path(slots: Sequence[int], values: Sequence[str]) -> str:
    """Path data through the points (x: slot index, y: p95 ms as formatted); a gap in the
    slots starts a new subpath."""
    if slots[-1] - slots[0] == len(slots) - 1:  # no gap: the common case
        return _run_format(slots[0], len(slots)) % tuple(values)
    parts: list[str] = []
    previous = -2
    for slot, value in zip(slots, values, strict=True):
        if slot != previous + 1 and parts:
            # A zero-length segment: with round caps a lone point still shows as a dot.
            parts.append("h0")
        parts.append(("L" if slot == previous + 1 else "M") + f"{slot},{value}")
        previous = slot
    parts.append("h0")
    return "".join(parts)


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


def latency_chart(
    window: Window,
    start: int,
    regions: Sequence[str],
    series: Mapping[str, Points],
    ident: str,
    caption: str,
) -> Chart:
    """The p95 chart of one canary over one window.

    Args:
        window: the window (its step and frame).
        start: the chart frame's start (s, `Window.frame`); slot i starts at start + i · step.
        regions: the regions to draw, in legend order (a region without points is listed).
        series: per region, its points.
        ident: a page-unique id prefix for the title and description.
        caption: what the chart shows, for the title and the table caption.
    """
    # The frame's slots, and one more for results started past a calendar window's last day
    # (in the minutes before the window moves to the new day).
    slots = max([window.slots()] + [p.slots[-1] + 1 for p in series.values() if p.slots])
    top = _nice(max((p.highest for p in series.values() if p.slots), default=0.0))
    # Points are (slot, p95 ms); one transform maps them onto the plot, and the lines keep
    # their width (`vector-effect` in site.css). No coordinate is computed per point here.
    step = PLOT_W / slots
    plot = f"matrix({step:.6g} 0 0 {-PLOT_H / top:.6g} {LEFT + step / 2:.6g} {TOP + PLOT_H})"
    paths, summary = [], []
    columns: list[tuple[Sequence[int], Sequence[str]]] = []
    for index, region in enumerate(regions):
        style = f"s{index % STYLES}"
        name = _html(region)
        points = series.get(region)
        if points is None or not points.slots:
            columns.append(((), ()))
            summary.append(f"{region}: no data")
            continue
        shown = points.shown.split(",")
        columns.append((points.slots, shown))
        paths.append(
            f'<path class="line {style}" data-region="{name}" d="{_path(points.slots, shown)}"/>'
        )
        summary.append(
            f"{region}: highest {millis(points.highest)}, latest {millis(points.latest)}"
        )
    svg = Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc">'
        f'<title id="{ident}-title">{escape(caption)}</title>'
        f'<desc id="{ident}-desc">{escape("; ".join(summary))}.</desc>'
        f'<g class="axes" aria-hidden="true">{_y_axis(top)}{_x_axis(window, start, slots)}</g>'
        f'<g transform="{plot}">{"".join(paths)}</g></svg>'
    )
    legend, head = _legend_and_head(tuple(regions))
    body = _body(window, start, slots, columns)
    return Chart(svg, legend, head, Markup(body), not body)


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
