"""The fleet overview, the per-region reports and the public status page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from markupsafe import Markup

from reconciler.core.status import HEADLINES, RESERVED, Status, worst
from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild import maintenance_view
from reconciler.sitebuild.layout import (
    SEVERITY,
    SKETCH_NOTE,
    badge,
    base_context,
    blended,
    html,
    region_state,
    stamp,
    switcher,
    window_view,
)
from reconciler.sitebuild.model import (
    INCIDENTS,
    STATUS,
    RegionInfo,
    Snapshot,
    canary_path,
    link,
    overview_path,
    region_path,
)
from reconciler.sitebuild.windows import WINDOWS, Window

# A canary's row of the overview and the region reports, formatted here: a thousand rows
# through Jinja cost more than the rest of the page (measured: pre-formatted content renders
# twice as fast), and 18 pages of a thousand rows each are drawn on every build.
_CELLS = '<td>{}</td><td>{}</td><td>{}</td><td class="opt">{}</td>{}</tr>\n'
_NO_FIGURES = (fmt.NO_DATA, fmt.NO_DATA, "0")


def _heads(snapshot: Snapshot, window: Window) -> dict[str, str]:
    """Each canary's row head (its linked name) on the pages at the site's root: the same
    on the overview and every region's report of a window, so made once per window."""
    return snapshot.shared(
        ("heads", window.name),
        lambda: {
            canary.key: (
                f'<tr><th scope="row"><a href="{html(canary_path(canary.ident, window))}">'
                f"{html(canary.key)}</a></th>"
            )
            for canary in snapshot.canaries
        },
    )


# A canary's status in one scope (None: blended), its badge and the cell ending its row.
_Standing = tuple[str, str, str]


def _standings(snapshot: Snapshot, scope: str | None) -> dict[str, _Standing]:
    """Each canary's `_Standing` in `scope`: the same on that scope's page of every window
    (five pages each), so worked out once per snapshot and render process."""
    return snapshot.shared(
        ("standings", scope),
        lambda: {
            canary.key: _standing(snapshot, canary.key, len(canary.regions), scope)
            for canary in snapshot.canaries
        },
    )


def _standing(snapshot: Snapshot, canary: str, regions: int, scope: str | None) -> _Standing:
    if scope is None:
        status = blended(snapshot, canary)
        run = snapshot.statuses.get(canary, {}).get("last_run")
        return status, badge(status, run), f'<td class="opt">{regions}</td>'
    state = region_state(snapshot, canary, scope)
    return state["status"], badge(state["status"], state["last_run"]), ""


def overview_context(
    snapshot: Snapshot, window: Window, region: RegionInfo | None
) -> dict[str, Any]:
    """The fleet overview (region None) or one region's report, for one window."""
    path = overview_path(window) if region is None else region_path(region.name, window)
    title = "Fleet overview" if region is None else f"Region {region.name}"
    scope = region.name if region else None
    figures, name = snapshot.figures, window.name
    heads = _heads(snapshot, window)
    standings = _standings(snapshot, scope)
    percent, millis, cells_format = fmt.percent, fmt.millis, _CELLS.format
    rows: list[tuple[int, str, str]] = []
    counts = dict.fromkeys(SEVERITY, 0)
    # A thousand rows a page, thirty pages a build: names looked up once, not per row.
    for canary in snapshot.canaries:
        key = canary.key
        figure = figures.get((name, key, scope))
        if scope is not None and scope not in canary.regions and not figure:
            continue
        status, shown, end = standings[key]
        if figure is None:
            row = heads[key] + cells_format(shown, *_NO_FIGURES, end)
        else:
            uptime = percent(figure.passes, figure.runs)
            row = heads[key] + cells_format(
                shown, uptime, millis(figure.p95), f"{figure.runs:,}", end
            )
        counts[status] = counts.get(status, 0) + 1
        rows.append((SEVERITY.get(status, 9), key, row))
    rows.sort()  # by severity, then canary key (unique: the rows themselves never compare)
    regions = snapshot.regions
    filters = []
    if len(regions) > 1:
        filters = [
            {
                "label": "All regions",
                "href": link(path, overview_path(window)),
                "current": region is None,
            }
        ] + [
            {
                "label": r.name,
                "href": link(path, region_path(r.name, window)),
                "current": region is not None and r.name == region.name,
            }
            for r in regions
        ]
    target: Callable[[Window], str] = (
        overview_path if region is None else (lambda w: region_path(region.name, w))
    )
    return {
        **base_context(path, f"{title}, {window.label}", "overview"),
        **stamp(snapshot),
        "heading": title,
        "region": region,
        "window": window_view(snapshot.windows.get(window.name), window),
        "windows": switcher(path, target, window),
        "filters": filters,
        "summary": [
            {"status": s.value, "label": fmt.status_label(s), "count": counts[s.value]}
            for s in sorted(Status, key=lambda s: SEVERITY[s.value])
            if s not in RESERVED or counts[s.value]
        ],
        "rows": Markup("".join(html for _, _, html in rows)),
        "note": SKETCH_NOTE,
        "silent": _silent(snapshot, path, window, region),
        "maintenance": maintenance_view.section(snapshot, region=scope),
    }


def _silent(
    snapshot: Snapshot, path: str, window: Window, region: RegionInfo | None
) -> list[dict[str, Any]]:
    """The silent agents a page lists: all of them on the overview (each linked to its
    region's report when it has one), the region's own on a region's report."""
    reports = set(snapshot.region_names())
    shown = []
    for agent in snapshot.silent:
        if region is not None and agent.region != region.name:
            continue
        href = None
        if region is None and agent.region in reports:
            href = link(path, region_path(agent.region, window))
        shown.append({**agent.view(), "href": href})
    return shown


def verdict(statuses: list[str]) -> tuple[str, str]:
    """The status page's headline: the worst of the canaries' blended statuses (core/status.py)."""
    headline = worst(Status(s) for s in statuses)
    return headline.value, HEADLINES[headline]


# The status page's uptime columns left out on a phone's screen (`.opt`), where five do not fit.
NARROW_HIDDEN = frozenset({"7d", "90d"})


def status_context(snapshot: Snapshot) -> dict[str, Any]:
    """The public status page: a verdict blended over regions, per-canary uptime, incidents."""
    rows: list[dict[str, Any]] = []
    statuses: list[str] = []
    for canary in snapshot.canaries:
        status = blended(snapshot, canary.key)
        statuses.append(status)
        uptimes = []
        for window in WINDOWS:
            figure = snapshot.figure(window.name, canary.key, None)
            value = fmt.percent(figure.passes, figure.runs) if figure else fmt.NO_DATA
            uptimes.append((value, window.name in NARROW_HIDDEN))
        rows.append(
            {
                "name": canary.key,
                "href": link(STATUS, canary_path(canary.ident, WINDOWS[0])),
                "status": Markup(
                    badge(status, snapshot.statuses.get(canary.key, {}).get("last_run"))
                ),
                "uptimes": uptimes,
            }
        )
    state, headline = verdict(statuses)
    pages = {canary.key: canary.ident for canary in snapshot.canaries}
    open_incidents = [
        {
            "id": incident["id"],
            "canary": incident["canary"],
            "canary_href": (
                link(STATUS, canary_path(pages[incident["canary"]], WINDOWS[0]))
                if incident["canary"] in pages
                else None
            ),
            "href": f"{link(STATUS, INCIDENTS)}#incident-{incident['id']}",
            "since": fmt.stored_moment(incident["opened_at"]),
            "since_iso": incident["opened_at"],
            "regions_down": ", ".join(incident["regions_down"]) or "none now",
        }
        for incident in snapshot.incidents
        if incident["state"] == "open"
    ]
    return {
        **base_context(STATUS, "Status", "status"),
        **stamp(snapshot),
        "heading": "Service status",
        "verdict": state,
        "headline": headline,
        "windows": [(w.label, w.name in NARROW_HIDDEN) for w in WINDOWS],
        "rows": rows,
        "incidents": open_incidents,
        "incidents_href": INCIDENTS,
        "maintenance": maintenance_view.section(snapshot),
    }
