"""A canary's page, one per window: KPI cards, the latency chart, regions, recent failures."""

from __future__ import annotations

from typing import Any

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.charts import latency_chart
from reconciler.sitebuild.layout import (
    SKETCH_NOTE,
    base_context,
    blended,
    figure_cells,
    region_status,
    switcher,
    window_view,
)
from reconciler.sitebuild.model import (
    CanaryInfo,
    Fragment,
    Snapshot,
    canary_path,
    fingerprint,
    link,
    overview_path,
    region_path,
)
from reconciler.sitebuild.queries import Figures
from reconciler.sitebuild.windows import Window

FAILURES_SHOWN = 10


def canary_key(
    snapshot: Snapshot,
    canary: CanaryInfo,
    window: Window,
    figures: dict[str | None, Figures],
) -> str:
    """Everything a canary page shows, digested: equal keys mean equal pages."""
    state = snapshot.windows.get(window.name)
    regions = [r for r in snapshot.regions if r.name in canary.regions]
    return fingerprint(
        window.name,
        None if state is None else (state.start, state.end, state.version),
        sorted(((r or "", f) for r, f in figures.items()), key=lambda item: item[0]),
        snapshot.statuses.get(canary.key),
        snapshot.failures.get(canary.key, [])[:FAILURES_SHOWN],
        canary,
        regions,
        snapshot.region_names(),
    )


def failure_rows(failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A canary's recent failures as shown (formatted once, shown on its three pages)."""
    return [
        {
            "at": fmt.moment(f["started_at"], seconds=True),
            "at_iso": fmt.iso(f["started_at"]),
            "region": f["region"],
            "agent": f["agent"],
            "check": f["check"],
            "status": f["status"],
            "code": f["code"] if f["code"] is not None else "",
            "message": (f["message"] or "")[:300],
            "duration": fmt.millis(f["duration_ms"]),
        }
        for f in failures[:FAILURES_SHOWN]
    ]


def canary_context(
    snapshot: Snapshot,
    canary: CanaryInfo,
    window: Window,
    figures: dict[str | None, Figures],
    failures: Fragment,
) -> dict[str, Any]:
    """One canary's page for one window (`failures`: its recent failures, as a fragment)."""
    path = canary_path(canary.ident, window)
    state = snapshot.windows.get(window.name)
    status = blended(snapshot, canary.key)
    overall = figures.get(None)
    regions = sorted(set(canary.regions) | {r for r in figures if r is not None})
    site_regions = set(snapshot.region_names())
    by_region = [
        {
            "name": name,
            "href": link(path, region_path(name, window)) if name in site_regions else None,
            "status": region_status(snapshot, canary.key, name),
            "status_label": fmt.status_label(region_status(snapshot, canary.key, name)),
            **figure_cells(figures.get(name)),
        }
        for name in regions
    ]
    chart = None
    if state is not None:
        chart = latency_chart(
            window,
            window.frame(state.start),
            regions,
            snapshot.charts.get((window.name, canary.key), {}),
            f"chart-{window.name}",
            f"p95 latency by region, {window.label} to {fmt.moment(state.end)}",
        )
    cells = figure_cells(overall)
    return {
        **base_context(path, canary.key, "overview"),
        "heading": canary.key,
        "canary": canary,
        "status": status,
        "status_label": fmt.status_label(status),
        "window": window_view(state, window),
        "windows": switcher(path, lambda w: canary_path(canary.ident, w), window),
        "overview_href": link(path, overview_path(window)),
        "kpis": [
            {"label": "Status", "value": fmt.status_label(status), "status": status},
            {"label": f"Uptime ({window.name})", "value": cells["uptime"]},
            {"label": "p50", "value": cells["p50"]},
            {"label": "p95", "value": cells["p95"]},
            {"label": "p99", "value": fmt.millis(overall.p99 if overall else None)},
            {"label": "Runs", "value": cells["runs"]},
        ],
        "chart": chart,
        "by_region": by_region,
        "failures": failures,
        "note": None if window.exact else SKETCH_NOTE,
    }
