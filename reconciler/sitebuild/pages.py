"""Every page of a build: a `Page` per canary and window, region, overview and the rest.

Canary pages carry a `key`, a fingerprint of everything they show, so that a rebuild renders
only the pages whose key moved; they are `leaf`s, written before the pages linking to them.
A canary's recent failures and its checks are made once for its pages, and kept from build
to build by the builder's `KeptSections`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from markupsafe import Markup

from reconciler.sitebuild.canary_page import (
    KeptSections,
    canary_context,
    canary_digest,
    canary_key,
    summary,
    summary_digest,
)
from reconciler.sitebuild.fleet_pages import overview_context, status_context
from reconciler.sitebuild.layout import refusal_banner
from reconciler.sitebuild.model import (
    DEPLOYMENTS,
    INCIDENTS,
    SLA,
    STATUS,
    Page,
    Snapshot,
    canary_path,
    overview_path,
    region_path,
    screenshot_path,
    sla_path,
)
from reconciler.sitebuild.ops_pages import deployments_context, incidents_context
from reconciler.sitebuild.queries import Figures
from reconciler.sitebuild.sla_pages import (
    canary_sla_context,
    canary_sla_csv,
    sla_index_context,
    sla_key,
)
from reconciler.sitebuild.windows import WINDOWS


class Ahead(NamedTuple):
    """What `plan` needs of a snapshot but its windows' figures, tails and states: each
    canary's recent failures and checks as HTML and the digests of what its pages show
    whatever the window (by canary key), and the SLA pages."""

    canaries: dict[str, tuple[Markup, Markup, str, str]]  # failures, checks, digest, summary's
    sla: list[Page]


def plan_ahead(snapshot: Snapshot, sections: KeptSections | None = None) -> Ahead:
    """The part of `plan` that reads no window (a build makes it while the windows' open parts
    are computed: `builder.py`). Its pages are bound to `snapshot`, which the build then
    completes."""
    sections = KeptSections() if sections is None else sections
    sections.retain({canary.key for canary in snapshot.canaries})
    return Ahead(
        {
            canary.key: (
                sections.failures(canary.key, snapshot.failures.get(canary.key, [])),
                sections.checks(canary),
                canary_digest(snapshot, canary),
                summary_digest(snapshot, canary),
            )
            for canary in snapshot.canaries
        },
        _sla_pages(snapshot),
    )


def plan(
    snapshot: Snapshot, sections: KeptSections | None = None, ahead: Ahead | None = None
) -> list[Page]:
    """Every page of the site for this snapshot (canary pages first; `sections`: what the
    builder kept of the canaries' sections from its last build; `ahead`: `plan_ahead` of
    this snapshot, made already)."""
    ahead = plan_ahead(snapshot, sections) if ahead is None else ahead
    by_canary: dict[tuple[str, str], dict[str | None, Figures]] = {}
    for (window_name, parent, scope), figure in snapshot.figures.items():
        by_canary.setdefault((window_name, parent), {})[scope] = figure
    pages: list[Page] = []
    for canary in snapshot.canaries:
        failures, checks, shared, steady = ahead.canaries[canary.key]
        for window in WINDOWS:
            figures = by_canary.get((window.name, canary.key), {})
            digest = steady if summary(window) else shared
            pages.append(
                Page(
                    canary_path(canary.ident, window),
                    "canary.html",
                    _bind(canary_context, snapshot, canary, window, figures, failures, checks),
                    key=canary_key(snapshot, canary.key, digest, window, figures),
                    leaf=True,
                    flat=True,
                    chart=(window.name, canary.key),
                )
            )
    for canary in snapshot.canaries:
        for shot in snapshot.screenshots.get(canary.key, []):
            path = screenshot_path(canary.ident, shot.check, shot.started_at)
            pages.append(Page(path, "", dict, key=path, leaf=True, raw=shot.png))
    for window in WINDOWS:
        for region in snapshot.regions:
            pages.append(
                Page(
                    region_path(region.name, window),
                    "overview.html",
                    _bind(overview_context, snapshot, window, region),
                )
            )
    pages += ahead.sla
    pages += [
        Page(SLA, "sla_index.html", _bind(sla_index_context, snapshot)),
        Page(INCIDENTS, "incidents.html", _bind(incidents_context, snapshot)),
        Page(DEPLOYMENTS, "deployments.html", _bind(deployments_context, snapshot)),
        Page(STATUS, "status.html", _bind(status_context, snapshot)),
    ]
    pages += [
        Page(overview_path(w), "overview.html", _bind(overview_context, snapshot, w, None))
        for w in WINDOWS
    ]
    _add_banner(pages, snapshot)
    return pages


def sla_pages(snapshot: Snapshot) -> list[Page]:
    """The canaries' SLA pages and tables alone (`SiteBuilder.draw_ahead`), as `plan` has
    them: what they read of a snapshot is its months, incidents by month, maintenance
    windows, canaries, refusal and build stamp."""
    pages = _sla_pages(snapshot)
    _add_banner(pages, snapshot)
    return pages


def _sla_pages(snapshot: Snapshot) -> list[Page]:
    pages = []
    for canary in snapshot.canaries:
        key = sla_key(snapshot, canary)
        pages.append(
            Page(
                sla_path(canary.ident),
                "sla.html",
                _bind(canary_sla_context, snapshot, canary),
                key=key,
                leaf=True,
            )
        )
        pages.append(
            Page(
                sla_path(canary.ident, "csv"),
                "sla.csv",
                _bind(canary_sla_csv, snapshot, canary),
                key=key,
                leaf=True,
            )
        )
    return pages


def _add_banner(pages: list[Page], snapshot: Snapshot) -> None:
    banner = refusal_banner(snapshot)
    for page in pages:
        page.context = _with_banner(page.context, banner)


def _with_banner(
    context: Callable[[], dict[str, Any]], banner: Markup | None
) -> Callable[[], dict[str, Any]]:
    return lambda: {**context(), "banner": banner}


def _bind(function: Callable[..., dict[str, Any]], *args: Any) -> Callable[[], dict[str, Any]]:
    return lambda: function(*args)
