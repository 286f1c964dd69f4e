"""Inline SVG latency charts: one p95 line per region, with a legend and a data table.

Everything is formatted here, in Python, as whole viewBox units, so templates only place
ready strings (MEASURED.md: pre-formatted points render twice as fast). The SVG carries a
`<title>` and a `<desc>`; the table holds the same numbers as text.
"""

from __future__ import annotations

import functools
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
_CELL = "<td>%.1f</td>"  # `%` formatting through map(): about 2.5x an f-string per value


@dataclass(frozen=True)
class Chart:
    """A rendered chart: the SVG, the legend entries and the data table."""

    svg: Markup
    legend: list[tuple[str, str]]  # (style class, region)
    head: Markup  # the table's header cells
    body: Markup  # the table's rows
    empty: bool


Series = tuple[Sequence[int], Sequence[float]]  # slots and p95 values, slots ascending


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


@functools.lru_cache(maxsize=8)
def _xs(slots: int) -> tuple[str, ...]:
    return tuple(str(round(LEFT + (i + 0.5) * PLOT_W / slots)) for i in range(slots))


def _slot_label(window: Window, moment: int) -> str:
    when = datetime.fromtimestamp(moment, UTC)
    return when.strftime("%H:%M" if window.days is None else "%d %b %H:%M")


@functools.lru_cache(maxsize=8)
def _row_heads(window: Window, start: int) -> tuple[str, ...]:
    return tuple(
        f'<tr><th scope="row"><time datetime="'
        f'{datetime.fromtimestamp(start + i * window.step, UTC):%Y-%m-%dT%H:%MZ}">'
        f"{_slot_label(window, start + i * window.step)}</time></th>"
        for i in range(window.slots())
    )


@functools.lru_cache(maxsize=8)
def _x_axis(window: Window, start: int) -> str:
    """Tick labels: every 6 hours (24h), every day (7d), every 5 days (30d)."""
    every = 6 * 3600 if window.days is None else DAY if window.days <= 7 else 5 * DAY
    fmt = "%H:%M" if window.days is None else "%d %b"
    slots, parts = window.slots(), []
    first = -(-start // every) * every  # ticks on whole 6 hours, days, 5 days
    for moment in range(first, start + slots * window.step, every):
        x = round(LEFT + (moment - start) / (slots * window.step) * PLOT_W)
        label = datetime.fromtimestamp(moment, UTC).strftime(fmt)
        parts.append(
            f'<line class="tick" x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + PLOT_H}"/>'
            f'<text x="{x}" y="{HEIGHT - 8}">{label}</text>'
        )
    return "".join(parts)


def _y_axis(top: float) -> str:
    """Grid lines and labels at 0, half and the top of the scale."""
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        y = round(TOP + PLOT_H * (1 - fraction))
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>'
            f'<text class="y" x="{LEFT - 6}" y="{y + 4}">{top * fraction:,g} ms</text>'
        )
    return "".join(parts)


def _path(slots: Sequence[int], ys: Sequence[str], xs: Sequence[str]) -> str:
    """Path data through the points; a gap in the slots starts a new subpath."""
    if slots[-1] - slots[0] == len(slots) - 1:  # no gap: the common case
        joined = "L".join([xs[slot] + "," + y for slot, y in zip(slots, ys, strict=True)])
        return "M" + joined + ("h0" if len(slots) == 1 else "")
    parts: list[str] = []
    previous = -2
    for slot, y in zip(slots, ys, strict=True):
        if slot != previous + 1 and parts:
            # A zero-length segment: with round caps a lone point still shows as a dot.
            parts.append("h0")
        parts.append(("L" if slot == previous + 1 else "M") + xs[slot] + "," + y)
        previous = slot
    parts.append("h0")
    return "".join(parts)


def _body(heads: Sequence[str], columns: Sequence[tuple[Sequence[int], list[str]]]) -> str:
    """The data table's rows: one per slot with data, one cell per region."""
    first = columns[0][0] if columns else ()
    if all(slots == first for slots, _ in columns):  # every region has the same slots
        rows = zip([heads[slot] for slot in first], *[cells for _, cells in columns], strict=True)
        return "</tr>".join(["".join(row) for row in rows]) + ("</tr>" if first else "")
    lookups = [dict(zip(slots, cells, strict=True)) for slots, cells in columns]
    used = sorted({slot for slots, _ in columns for slot in slots})
    return "".join(
        heads[slot] + "".join([lookup.get(slot, "<td>—</td>") for lookup in lookups]) + "</tr>"
        for slot in used
    )


def latency_chart(
    window: Window,
    start: int,
    regions: Sequence[str],
    series: Mapping[str, Series],
    ident: str,
    caption: str,
) -> Chart:
    """The p95 chart of one canary over one window.

    Args:
        window: the window (its step and frame).
        start: the chart frame's start (s, `Window.frame`); slot i starts at start + i · step.
        regions: the regions to draw, in legend order (a region without points is listed).
        series: per region, its slots and p95 values.
        ident: a page-unique id prefix for the title and description.
        caption: what the chart shows, for the title and the table caption.
    """
    xs = _xs(window.slots())
    top = _nice(max((max(values) for _, values in series.values() if values), default=0.0))
    scale, bottom = PLOT_H / top, TOP + PLOT_H + 0.5
    paths, legend, summary = [], [], []
    columns: list[tuple[Sequence[int], list[str]]] = []
    for index, region in enumerate(regions):
        style = f"s{index % STYLES}"
        legend.append((style, region))
        points, values = series.get(region, ((), ()))
        columns.append((points, list(map(_CELL.__mod__, values))))
        if not values:
            summary.append(f"{region}: no data")
            continue
        ys = [str(int(bottom - value * scale)) for value in values]
        paths.append(f'<path class="line {style}" d="{_path(points, ys, xs)}"/>')
        summary.append(f"{region}: highest {millis(max(values))}, latest {millis(values[-1])}")
    svg = Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc">'
        f'<title id="{ident}-title">{escape(caption)}</title>'
        f'<desc id="{ident}-desc">{escape("; ".join(summary))}.</desc>'
        f'<g class="axes" aria-hidden="true">{_y_axis(top)}{_x_axis(window, start)}</g>'
        f"{''.join(paths)}</svg>"
    )
    head = "".join(f'<th scope="col">{escape(region)} (ms)</th>' for region in regions)
    body = _body(_row_heads(window, start), columns)
    return Chart(svg, legend, Markup(head), Markup(body), not body)
