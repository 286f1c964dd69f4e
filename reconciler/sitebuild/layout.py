"""What pages share: navigation, the build stamp, window links, statuses and figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.model import (
    DEPLOYMENTS,
    INCIDENTS,
    INDEX,
    STATUS,
    STYLESHEET,
    Snapshot,
    link,
)
from reconciler.sitebuild.queries import Figures, WindowState
from reconciler.sitebuild.sketch import ALPHA
from reconciler.sitebuild.windows import WINDOWS, Window

SEVERITY = {"down": 0, "degraded": 1, "unknown": 2, "up": 3}
SKETCH_NOTE = f"Latency percentiles over 7 and 30 days come from histograms: within {ALPHA:.0%}."

_NAV = (
    ("Overview", INDEX, "overview"),
    ("Status", STATUS, "status"),
    ("Incidents", INCIDENTS, "incidents"),
    ("Deployments", DEPLOYMENTS, "deployments"),
)


def base_context(path: str, title: str, section: str) -> dict[str, Any]:
    """The layout's fields: title, stylesheet and site navigation, linked relative to `path`."""
    return {
        "title": title,
        "stylesheet": link(path, STYLESHEET),
        "home": link(path, INDEX),
        "nav": [
            {
                "label": label,
                "href": link(path, target),
                "current": "page" if target == path else "true" if section == name else None,
            }
            for label, target, name in _NAV
        ],
    }


def stamp(snapshot: Snapshot) -> dict[str, Any]:
    """When the build ran and what it saw (only on pages that are rebuilt every time)."""
    revision = snapshot.revision
    described = None
    if revision:
        described = f"serial {revision['serial']}"
        if revision.get("sha"):
            described += f", commit {str(revision['sha'])[:12]}"
    return {
        "generated": fmt.moment(snapshot.now, seconds=True),
        "generated_iso": fmt.iso(snapshot.now),
        "latest": fmt.moment(snapshot.latest, seconds=True) if snapshot.latest else None,
        "revision": described,
    }


def window_view(state: WindowState | None, window: Window) -> dict[str, Any]:
    """A window's name, label and bounds as pages show them."""
    view: dict[str, Any] = {"name": window.name, "label": window.label}
    if state is not None:
        view.update(
            start=fmt.moment(state.start),
            end=fmt.moment(state.end),
            start_iso=fmt.iso(state.start),
            end_iso=fmt.iso(state.end),
            calendar=window.days is not None,
            days=window.days or 0,
        )
    return view


def switcher(path: str, target: Callable[[Window], str], current: Window) -> list[dict[str, Any]]:
    """Links to the same page in each window."""
    return [
        {"label": w.label, "href": link(path, target(w)), "current": w == current} for w in WINDOWS
    ]


def region_status(snapshot: Snapshot, canary: str, region: str) -> str:
    """A region's verdict in the canary's blended status: up, down or unknown."""
    status = snapshot.statuses.get(canary, {})
    if region in status.get("regions_down", []):
        return "down"
    if region in status.get("regions_up", []):
        return "up"
    return "unknown"


def blended(snapshot: Snapshot, canary: str) -> str:
    """A canary's blended status (unknown without recent runs)."""
    return str(snapshot.statuses.get(canary, {}).get("status", "unknown"))


def figure_cells(figure: Figures | None) -> dict[str, str]:
    """Uptime, p50, p95 and runs, formatted."""
    if figure is None:
        return {"uptime": fmt.NO_DATA, "p50": fmt.NO_DATA, "p95": fmt.NO_DATA, "runs": "0"}
    return {
        "uptime": fmt.percent(figure.passes, figure.runs),
        "p50": fmt.millis(figure.p50),
        "p95": fmt.millis(figure.p95),
        "runs": fmt.count(figure.runs),
    }
