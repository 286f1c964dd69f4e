"""The fleet overview, the per-region reports and the public status page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.layout import (
    SEVERITY,
    SKETCH_NOTE,
    base_context,
    blended,
    figure_cells,
    region_status,
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


def _rows_html(rows: list[dict[str, Any]], scoped: bool) -> Markup:
    """The overview's table rows, formatted here: a thousand rows through Jinja cost more
    than the rest of the page (MEASURED.md: pre-formatted content renders twice as fast)."""
    regions = "" if scoped else '<td class="opt">{regions}</td>'
    line = (
        '<tr><th scope="row"><a href="{href}">{name}</a></th>'
        '<td><span class="badge status-{status}">{status_label}</span></td>'
        '<td>{uptime}</td><td>{p95}</td><td class="opt">{runs}</td>' + regions + "</tr>\n"
    )
    return Markup(
        "".join(line.format(**{key: escape(value) for key, value in row.items()}) for row in rows)
    )


def overview_context(
    snapshot: Snapshot, window: Window, region: RegionInfo | None
) -> dict[str, Any]:
    """The fleet overview (region None) or one region's report, for one window."""
    path = overview_path(window) if region is None else region_path(region.name, window)
    title = "Fleet overview" if region is None else f"Region {region.name}"
    rows: list[dict[str, Any]] = []
    for canary in snapshot.canaries:
        if region is None:
            status = blended(snapshot, canary.key)
        elif region.name in canary.regions or snapshot.figure(window.name, canary.key, region.name):
            status = region_status(snapshot, canary.key, region.name)
        else:
            continue
        figure = snapshot.figure(window.name, canary.key, region.name if region else None)
        rows.append(
            {
                "name": canary.key,
                "href": link(path, canary_path(canary.ident, window)),
                "status": status,
                "status_label": fmt.status_label(status),
                "regions": len(canary.regions),
                **figure_cells(figure),
            }
        )
    rows.sort(key=lambda row: (SEVERITY.get(row["status"], 9), row["name"]))
    counts = dict.fromkeys(SEVERITY, 0)
    for row in rows:
        counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
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
        **base_context(path, title, "overview"),
        **stamp(snapshot),
        "heading": title,
        "region": region,
        "window": window_view(snapshot.windows.get(window.name), window),
        "windows": switcher(path, target, window),
        "filters": filters,
        "summary": [
            {"status": s, "label": fmt.status_label(s), "count": counts[s]}
            for s in ("up", "degraded", "down", "unknown")
        ],
        "rows": _rows_html(rows, region is not None),
        "note": None if window.exact else SKETCH_NOTE,
    }


def verdict(statuses: list[str]) -> tuple[str, str]:
    """The status page's headline from the canaries' blended statuses."""
    known = [s for s in statuses if s != "unknown"]
    if not known:
        return "unknown", "No data yet"
    if all(s == "down" for s in known):
        return "down", "Major outage"
    if "down" in known:
        return "partial", "Partial outage"
    if "degraded" in known:
        return "degraded", "Degraded performance in some regions"
    return "up", "All systems operational"


def status_context(snapshot: Snapshot) -> dict[str, Any]:
    """The public status page: a verdict blended over regions, per-canary uptime, incidents."""
    rows: list[dict[str, Any]] = []
    for canary in snapshot.canaries:
        status = blended(snapshot, canary.key)
        uptimes = []
        for window in WINDOWS:
            figure = snapshot.figure(window.name, canary.key, None)
            uptimes.append(fmt.percent(figure.passes, figure.runs) if figure else fmt.NO_DATA)
        rows.append(
            {
                "name": canary.key,
                "href": link(STATUS, canary_path(canary.ident, WINDOWS[0])),
                "status": status,
                "status_label": fmt.status_label(status),
                "uptimes": uptimes,
            }
        )
    state, headline = verdict([str(row["status"]) for row in rows])
    open_incidents = [
        {
            "id": incident["id"],
            "canary": incident["canary"],
            "since": incident["opened_at"],
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
        "windows": [w.label for w in WINDOWS],
        "rows": rows,
        "incidents": open_incidents,
        "incidents_href": INCIDENTS,
    }
