"""A canary's page, one per window: KPI cards, the latency chart, regions, recent failures,
and a region selector scoping them (radio buttons and CSS: no server, no script).

The long windows' pages (90 d, 365 d: `summary`) show what changes over days, not minutes:
no last run, recent failures, screenshots or 24-hour outcome counts (they link to the 24-hour
page for those), and runs as a compact count (`1.30 M`). Their key digests what they display
(formatted figures, statuses without the last run), so the 2,000 of them at 1,000 canaries
are drawn again when something shown changes rather than at every new run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, NamedTuple

from markupsafe import Markup, escape

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild import maintenance_view
from reconciler.sitebuild.charts import latency_chart
from reconciler.sitebuild.layout import (
    SKETCH_NOTE,
    badge,
    base_context,
    blended,
    canary_switcher,
    figure_cells,
    html,
    refusal_mark,
    region_state,
    window_view,
)
from reconciler.sitebuild.model import (
    CanaryInfo,
    Snapshot,
    canary_path,
    fingerprint,
    link,
    overview_path,
    region_path,
    screenshot_path,
    sla_path,
)
from reconciler.sitebuild.queries import Figures
from reconciler.sitebuild.windows import WINDOWS, Window

FAILURES_SHOWN = 10


def summary(window: Window) -> bool:
    """Whether a window's canary pages leave out what moves with every run (see above)."""
    return window.tier


def canary_digest(snapshot: Snapshot, canary: CanaryInfo) -> str:
    """What a canary's pages show whatever the window, digested (once for its three pages)."""
    regions = [r for r in snapshot.regions if r.name in canary.regions]
    return fingerprint(
        snapshot.statuses.get(canary.key),
        snapshot.failures.get(canary.key, []),
        canary,
        regions,
        snapshot.region_names(),
        refusal_mark(snapshot),
        sorted((r or "", c) for r, c in snapshot.outcome_counts.get(canary.key, {}).items()),
        [(s.check, s.started_at.isoformat()) for s in snapshot.screenshots.get(canary.key, [])],
        maintenance_view.digest(snapshot, canary.key),
    )


def summary_digest(snapshot: Snapshot, canary: CanaryInfo) -> str:
    """What a canary's `summary` pages show whatever the window, digested: its statuses
    without the last runs, and the rest of `canary_digest` but the minute-level parts."""
    regions = [r for r in snapshot.regions if r.name in canary.regions]
    states = snapshot.statuses.get(canary.key, {})
    return fingerprint(
        states.get("status", "unknown"),
        sorted((name, state["status"]) for name, state in states.get("region_status", {}).items()),
        canary,
        regions,
        snapshot.region_names(),
        refusal_mark(snapshot),
        maintenance_view.digest(snapshot, canary.key),
    )


def canary_key(
    snapshot: Snapshot,
    canary: str,
    shared: str,
    window: Window,
    figures: dict[str | None, Figures],
) -> str:
    """Everything a canary page shows, digested: equal keys mean equal pages.

    Args:
        snapshot: the build's snapshot.
        canary: the canary's key.
        shared: the canary's `canary_digest`, or `summary_digest` for a `summary` window.
        window: the page's window.
        figures: the canary's figures in that window, by region (None: all regions).
    """
    state = snapshot.windows.get(window.name)
    shown: list[Any]
    if summary(window):
        # What the page prints, not the figures: they move with every run, what is printed
        # of them (uptime to 0.01%, runs in 3 digits) seldom does.
        shown = sorted((r or "", _summary_cells(f)) for r, f in figures.items() if f is not None)
    else:
        shown = sorted(((r or "", f) for r, f in figures.items()), key=lambda item: item[0])
    return fingerprint(
        shared,
        window.name,
        None if state is None else (state.start, state.end, state.version),
        shown,
        # The chart's newest points move without the window moving.
        sorted(
            (region, tail.slots[0], len(tail.slots), tail.shown)
            for region, tail in snapshot.tails.get((window.name, canary), {}).items()
        ),
    )


def _summary_cells(figure: Figures) -> tuple[str, ...]:
    cells = figure_cells(figure, compact=True)
    return cells["uptime"], cells["p50"], cells["p95"], cells["runs"]


_FAILURE = (
    '<tr data-region="{}"{}><th scope="row"><time datetime="{}">{}</time></th>'
    '<td>{}</td><td class="opt">{}</td><td>{}</td>'
    '<td>{}</td><td class="opt">{}</td><td class="opt">{}</td><td class="message">{}</td></tr>\n'
)
_REGION = (
    '<tr data-region="{}"><th scope="row">{}</th><td>{}</td><td class="opt">{}</td><td>{}</td>'
    '<td class="opt">{}</td><td>{}</td></tr>\n'
)
# The cards (six lists a page: all regions, then each region's) in three formats: status
# and last run, the window's figures, and the last 24 hours' counts. The first and last are
# the same on a canary's three pages, and made once for them (`_Head`).
_KPIS_STATUS = (
    '<li class="kpi status-{}"><span class="kpi-label">Status</span> '
    '<span class="kpi-value">{}</span></li>\n'
    '<li class="kpi last-{}"><span class="kpi-label">Last run</span> '
    '<span class="kpi-value">{}</span></li>\n'
)
_KPIS_FIGURES = (
    '<li class="kpi"><span class="kpi-label">Uptime ({})</span> '
    '<span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">p50</span> <span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">p95</span> <span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">p99</span> <span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">Check runs</span> '
    '<span class="kpi-value">{}</span></li>\n'
)
# Up runs counted apart, always over the last 24 hours (queries.outcome_counts).
_KPIS_COUNTS = (
    '<li class="kpi outcome-degraded"><span class="kpi-label">Degraded (24h)</span> '
    '<span class="kpi-value">{}</span></li>\n'
    '<li class="kpi outcome-retried"><span class="kpi-label">Passed after retries (24h)</span> '
    '<span class="kpi-value">{}</span></li>\n'
)
# A `summary` page's cards: no last run, no 24-hour counts, no p99 (`_summary_kpis`).
_SUMMARY_KPIS = (
    '<li class="kpi status-{}"><span class="kpi-label">Status</span> '
    '<span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">Uptime ({})</span> '
    '<span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">p50</span> <span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">p95</span> <span class="kpi-value">{}</span></li>\n'
    '<li class="kpi"><span class="kpi-label">Check runs</span> '
    '<span class="kpi-value">{}</span></li>\n'
)
_PAUSED = Markup(
    "Paused: this canary never runs (it has <code>replicas: 0</code> or the schedule "
    "<code>@never</code>), so no agent runs its checks and it opens no incident."
)
_CAPTION = "status now in each region, with its last run"
_SUMMARY_CAPTION = "status now in each region"
_RECENT = (
    '<p class="note">The last runs, recent failures and screenshots are on the '
    '<a href="{}">24-hour page</a>.</p>\n'
)


def failure_rows(failures: list[dict[str, Any]]) -> Markup:
    """A canary's recent failures as table rows (formatted once, shown on its three pages).

    Those not among the canary's newest (`recent_failures`) are marked `data-scoped`: shown
    in their region's view only."""
    return Markup(
        "".join(
            _FAILURE.format(
                html(f["region"]),
                "" if f.get("overall", True) else " data-scoped",
                *fmt.iso_and_moment(f["started_at"]),
                html(f["region"]),
                html(f["agent"]),
                html(f["check"]),
                html(_failure_status(f)),
                f["code"] if f["code"] is not None else "",
                fmt.millis(f["duration_ms"]),
                escape((f["message"] or "")[:300]),
            )
            for f in failures
        )
    )


_FAILURES_HEAD = (
    '  <div class="table-wrap">\n  <table class="failures">\n'
    "    <caption>The latest runs that did not pass, last 24 hours, newest first</caption>\n"
    '    <thead><tr><th scope="col">Started</th><th scope="col">Region</th>'
    '<th scope="col" class="opt">Agent</th><th scope="col">Check</th><th scope="col">Status</th>'
    '<th scope="col" class="opt">Code</th><th scope="col" class="opt">Duration</th>'
    '<th scope="col">Error</th></tr>'
    "</thead>\n    <tbody>\n"
)
_FAILURES_TAIL = "    </tbody>\n  </table>\n  </div>\n"
_NO_FAILURES = "  <p>No failed runs in the last 24 hours.</p>\n"


def failures_section(failures: list[dict[str, Any]]) -> str:
    """A canary's recent failures: the table, or a line saying there were none (made once,
    shown on its three pages; Python rather than a template, as for the rows)."""
    if not failures:
        return _NO_FAILURES
    return "".join((_FAILURES_HEAD, failure_rows(failures), _FAILURES_TAIL))


_CHECK = "    <li>{} check <code>{}</code>{}</li>\n"


def checks_section(canary: CanaryInfo) -> str:
    """A canary's checks (with their descriptions, labels and icons) and agents."""
    parts = [
        '<section aria-labelledby="checks-heading">\n'
        '  <h2 id="checks-heading">Checks and agents</h2>\n'
    ]
    if canary.about:
        about = "; ".join(f"{html(label)}: {html(value)}" for label, value in canary.about)
        parts.append(f'  <p class="about">{about}.</p>\n')
    parts.append('  <ul class="plain">\n')
    for index, (kind, name) in enumerate(canary.checks):
        description, labels, icon = (
            canary.check_notes[index] if canary.check_notes else ("", "", "")
        )
        note = f": {html(description)}" if description else ""
        if labels:
            note += f' <span class="labels">({html(labels)})</span>'
        if icon:
            note += f' <span class="icon">icon {html(icon)}</span>'
        parts.append(_CHECK.format(html(kind), html(name), note))
    agents = ", ".join(html(agent) for agent in canary.agents) if canary.agents else "none"
    parts.append(f"  </ul>\n  <p>Agents: {agents}.</p>\n</section>\n")
    return "".join(parts)


class KeptSections:
    """Each canary's recent failures and its checks and agents as HTML, kept by a builder from
    build to build and made again when what they show changed (a run failed, a revision was
    applied). The render processes start afresh each build: formatting every canary's in
    them took about 0.09 s of CPU a build at 1,000 canaries."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[list[dict[str, Any]], Markup]] = {}
        self._checks: dict[str, tuple[CanaryInfo, Markup]] = {}

    def failures(self, canary: str, recent: list[dict[str, Any]]) -> Markup:
        """A canary's recent failures (`failures_section`) for these failures."""
        kept = self._failures.get(canary)
        if kept is None or kept[0] != recent:
            kept = self._failures[canary] = (recent, Markup(failures_section(recent)))
        return kept[1]

    def checks(self, canary: CanaryInfo) -> Markup:
        """A canary's checks and agents (`checks_section`)."""
        kept = self._checks.get(canary.key)
        if kept is None or (kept[0] is not canary and kept[0] != canary):
            kept = self._checks[canary.key] = (canary, Markup(checks_section(canary)))
        return kept[1]

    def retain(self, canaries: set[str]) -> None:
        """Forget the canaries no longer served."""
        for kept in (self._failures, self._checks):
            for key in [key for key in kept if key not in canaries]:
                del kept[key]


def _failure_status(failure: dict[str, Any]) -> str:
    """`fail`, `error`, or `fail after 2 retries` when the check retried."""
    count = failure.get("retries") or 0
    return f"{failure['status']} after {fmt.retries(count)}" if count else str(failure["status"])


_SCREENSHOT = (
    '<figure class="screenshot"><a href="{0}"><img src="{0}" loading="lazy" width="640" '
    'alt="The page of check {1} when it did not pass"></a>'
    '<figcaption>{1}: <time datetime="{2}">{3}</time>, agent {4}</figcaption></figure>\n'
)


def screenshot_figures(path: str, canary: CanaryInfo, snapshot: Snapshot) -> Markup | None:
    """The newest screenshot of each browser check, linked from the page at `path`."""
    shots = snapshot.screenshots.get(canary.key, [])
    if not shots:
        return None
    return Markup(
        "".join(
            _SCREENSHOT.format(
                html(link(path, screenshot_path(canary.ident, s.check, s.started_at))),
                html(s.check),
                fmt.iso(s.started_at),
                fmt.moment(s.started_at, seconds=True),
                html(s.agent),
            )
            for s in shots
        )
    )


def last_run_label(run: dict[str, Any] | None) -> str:
    """The last run's outcome as a KPI value: `passed`, `passed after 2 retries`, `degraded
    (slow)`, `failed`, `failed after 2 retries` or `—`, and when it ran where the status
    says no run came lately (`fmt.run_time`)."""
    if run is None:
        return fmt.NO_DATA
    when = fmt.run_time(run)
    when = f' <span class="kpi-when">{html(when.strip())}</span>' if when else ""
    return html(fmt.outcome_text(run)) + when


def chart_regions(canary: CanaryInfo, scopes: Iterable[str | None]) -> list[str]:
    """The regions a canary page lists in a window, in order: the canary's, and any other
    its figures there have (`scopes`: their regions, None for all regions)."""
    return sorted(set(canary.regions) | {r for r in scopes if r is not None})


def canary_context(
    snapshot: Snapshot,
    canary: CanaryInfo,
    window: Window,
    figures: dict[str | None, Figures],
    failures: Markup,
    checks: Markup,
) -> dict[str, Any]:
    """One canary's page for one window (`failures` and `checks`: its recent failures and its
    checks and agents, as `KeptSections` has them).

    The template is flat (`Page.flat`): every value is printed whole or tested for truth."""
    path = canary_path(canary.ident, window)
    state = snapshot.windows.get(window.name)
    brief = summary(window)
    status = blended(snapshot, canary.key)
    overall = figures.get(None)
    regions = chart_regions(canary, figures)
    by_region, scopes = [], []
    for name in regions:
        head = _head(snapshot, canary.key, name)
        label = head.escaped
        if head.linked:
            label = f'<a href="{_region_href(name, window)}">{label}</a>'
        figure = figures.get(name)
        cells = figure_cells(figure, compact=brief)
        if len(regions) > 1:
            # A view per region, chosen without a server or a script: radio buttons, and
            # rules hiding the other regions' cards, lines and rows.
            if brief:
                cards = _summary_kpis(window, head.status, figure, cells)
            else:
                cards = _kpis(window, head, figure, cells)
            scopes.append((name, cards))
        by_region.append(
            _REGION.format(
                head.escaped,
                label,
                cells["uptime"],
                cells["p50"],
                cells["p95"],
                cells["runs"],
                head.status_badge if brief else head.badge,
            )
        )
    view = window_view(state, window)
    chart = None
    if state is not None:
        stored, tails, drawn = snapshot.chart(window.name, canary.key)
        chart = latency_chart(
            window,
            window.frame(state.start),
            regions,
            stored,
            tails,
            f"chart-{window.name}",
            f"p95 latency by region, {window.label} from {view['start']}",
            drawn,
        )
    if brief:
        kpis = _summary_kpis(window, status, overall, figure_cells(overall, compact=True))
        recent = Markup(_RECENT.format(html(link(path, canary_path(canary.ident, WINDOWS[0])))))
    else:
        kpis = _kpis(window, _head(snapshot, canary.key, None), overall, figure_cells(overall))
    return {
        **base_context(path, f"{canary.key}, {window.label}", "overview"),
        "heading": canary.key,
        "canary_key": canary.key,
        "status": status,
        "status_label": fmt.status_label(status),
        "window_label": view["label"],
        "window_range": view["range"],
        "windows": canary_switcher(canary.ident, window),
        "overview_href": link(path, overview_path(window)),
        "sla_href": link(path, sla_path(canary.ident)),
        # Pre-formatted rows: Jinja loops cost more than the rest of the page.
        "kpis": kpis,
        "selector": _selector(tuple(name for name, _ in scopes)),
        "scoped_kpis": Markup("".join(_SCOPED_KPIS.format(n, n, cards) for n, cards in scopes)),
        "scope_style": _scope_style(tuple(name for name, _ in scopes)),
        "chart_shown": chart is not None and not chart.empty,
        "chart_svg": chart.svg if chart else None,
        "chart_legend": chart.legend if chart else None,
        "chart_head": chart.head if chart else None,
        "chart_body": chart.body if chart else None,
        "by_region": Markup("".join(by_region)),
        "regions_caption": _SUMMARY_CAPTION if brief else _CAPTION,
        "failures": recent if brief else failures,
        "screenshots": None if brief else screenshot_figures(path, canary, snapshot),
        "checks": checks,
        "note": SKETCH_NOTE,
        "maintenance": maintenance_view.section(snapshot, canary.key),
        "paused_note": _PAUSED if status == "paused" else None,
    }


@functools.lru_cache(maxsize=1024)
def _region_href(region: str, window: Window) -> str:
    """A region's report in a window, linked from a canary page (all in one folder)."""
    return html(link(canary_path("-", window), region_path(region, window)))


def _summary_kpis(
    window: Window, status: str, figure: Figures | None, cells: dict[str, str]
) -> Markup:
    """A `summary` page's KPI cards: status, uptime, p50, p95 and runs (no p99: over months
    of runs with a slow tail of about 1%, it lies between the body and the tail and moves
    with every run whatever its precision)."""
    return Markup(
        _SUMMARY_KPIS.format(
            status,
            fmt.status_label(status),
            window.name,
            cells["uptime"],
            cells["p50"],
            cells["p95"],
            cells["runs"],
        )
    )


class _Head(NamedTuple):
    """What a canary's pages show of it in one region (None: all regions) whatever the
    window, made once for its pages in each render process."""

    escaped: str  # the region's name, escaped
    linked: bool  # the site has a report of the region
    status: str
    badge: str  # the status and the last run
    status_badge: str  # the status alone (`summary` pages)
    cards: tuple[str, str]  # the KPI cards before and after the window's figures


def _head(snapshot: Snapshot, canary: str, region: str | None) -> _Head:
    """A canary's `_Head` in a region, made by the first of its pages to ask."""
    return snapshot.shared(
        ("canary head", canary, region), functools.partial(_make_head, snapshot, canary, region)
    )


def _make_head(snapshot: Snapshot, canary: str, region: str | None) -> _Head:
    if region is None:
        status = blended(snapshot, canary)
        last = snapshot.statuses.get(canary, {}).get("last_run")
        escaped, linked = "", False
    else:
        here = region_state(snapshot, canary, region)
        status, last = here["status"], here["last_run"]
        escaped, linked = html(region), region in snapshot.region_names()
    degraded, retried = snapshot.outcome_counts.get(canary, {}).get(region) or (0, 0)
    cards = (
        _KPIS_STATUS.format(
            status,
            fmt.status_label(status),
            fmt.run_outcome(last) if last is not None else "none",
            last_run_label(last),
        ),
        _KPIS_COUNTS.format(fmt.count(degraded), fmt.count(retried)),
    )
    return _Head(escaped, linked, status, badge(status, last), badge(status, None), cards)


def _kpis(window: Window, head: _Head, figure: Figures | None, cells: dict[str, str]) -> Markup:
    """The KPI cards: status, last run, uptime, p50, p95, p99, runs, and the degraded and
    retried runs of the last 24 hours (pre-formatted list items; `cells`: the figure's
    `figure_cells`)."""
    return Markup(
        head.cards[0]
        + _KPIS_FIGURES.format(
            window.name,
            cells["uptime"],
            cells["p50"],
            cells["p95"],
            fmt.millis(figure.p99 if figure else None),
            cells["runs"],
        )
        + head.cards[1]
    )


_SCOPED_KPIS = (
    '  <div class="scope-one scope-{}">\n  <h3 class="scope-heading">Region {}</h3>\n'
    '  <ul class="kpis">\n{}  </ul>\n  </div>\n'
)


@functools.lru_cache(maxsize=256)
def _selector(regions: tuple[str, ...]) -> Markup | None:
    """The region selector: a radio button per view (before the sections it scopes, which
    the rules of `_scope_style` reach as their siblings), and their labels as tabs."""
    if not regions:
        return None
    radio = (
        '<input type="radio" name="scope" id="scope-{}" class="visually-hidden" '
        'aria-label="{}"{}>\n'
    )
    parts = [radio.format("all", "Show all regions", " checked")]
    parts += [radio.format(name, f"Show region {name} only", "") for name in regions]
    parts.append('<div class="scope-bar" aria-hidden="true">\n  <span>Region:</span>')
    parts.append(' <label for="scope-all">All regions</label>\n')
    parts += [f'  <label for="scope-{name}">{name}</label>\n' for name in regions]
    parts.append("</div>\n")
    return Markup("".join(parts))


@functools.lru_cache(maxsize=256)
def _scope_style(regions: tuple[str, ...]) -> Markup | None:
    """The rules of the region selector: with a region's button checked, the other regions'
    chart lines, legend items and table rows are hidden, and its cards replace the fleet's.
    Region names are slugs (`[a-z0-9-]`): safe in ids and selectors."""
    if not regions:
        return None
    rules = []
    for name in regions:
        on = f"#scope-{name}:checked ~"
        rules.append(
            f'{on} * [data-region]:not([data-region="{name}"]), {on} * .scope-all '
            f"{{ display: none; }}\n{on} * .scope-{name} {{ display: block; }}\n"
            f'{on} .scope-bar label[for="scope-{name}"] {{ background: var(--fg); '
            "color: var(--bg); }\n"
            f'#scope-{name}:focus-visible ~ .scope-bar label[for="scope-{name}"] '
            "{ outline: 3px solid var(--link); outline-offset: 2px; }\n"
        )
    return Markup("<style>\n" + "".join(rules) + "</style>\n")
