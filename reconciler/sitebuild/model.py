"""What a build knows (a `Snapshot` of the state), the pages it makes and where they go."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar, cast

import orjson

from reconciler.core.maintenance import Window as MaintenanceWindow
from reconciler.core.resources import Resource
from reconciler.sitebuild.charts import Head
from reconciler.sitebuild.queries import Figures, Series, Tails, WindowState
from reconciler.sitebuild.silence import SilentAgent
from reconciler.sitebuild.sla import Month
from reconciler.sitebuild.windows import WINDOWS, Window
from reconciler.store.refusals import Refusal
from reconciler.store.screenshots import Screenshot
from schemas.canary import CHECK_TYPES, HEARTBEAT
from schemas.heartbeat import DEFAULT_GRACE

T = TypeVar("T")

INDEX, STATUS, INCIDENTS, DEPLOYMENTS, SLA = (
    "index.html",
    "status.html",
    "incidents.html",
    "deployments.html",
    "sla.html",
)
STYLESHEET = "static/site.css"
DEFAULT_WINDOW = WINDOWS[0]


@dataclass(frozen=True)
class CanaryInfo:
    """A canary of the served revision, as the site shows it."""

    key: str  # namespace/name
    ident: str  # namespace.name: the page name, as the read API's target id
    regions: tuple[str, ...]
    agents: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]  # (type, name)
    # canary-checker's presentation fields: ("Owner", "team-shop"), ("Severity", ...), ...
    about: tuple[tuple[str, str], ...] = ()
    # per check, beside `checks`: its description, labels as "k=v" text and icon
    check_notes: tuple[tuple[str, str, str], ...] = ()
    slo: float | None = None  # percent of runs a month should pass (`spec.slo`)


@dataclass(frozen=True)
class RegionInfo:
    """A region some canary runs in."""

    name: str
    display: str | None = None
    location: str | None = None


@dataclass
class Snapshot:
    """Everything the pages of one build read, taken from the state in one go."""

    now: int
    canaries: list[CanaryInfo]
    regions: list[RegionInfo]
    statuses: dict[str, dict[str, Any]]
    failures: dict[str, list[dict[str, Any]]]
    figures: dict[tuple[str, str, str | None], Figures]
    windows: dict[str, WindowState]
    tails: dict[tuple[str, str], Tails]
    incidents: list[dict[str, Any]]
    deployments: list[dict[str, Any]]
    revision: dict[str, Any] | None
    latest: datetime | None
    refusal: Refusal | None = None
    # Stored chart points by window, then (window, canary key); `chart` adds the tails.
    stored: dict[str, dict[tuple[str, str], Series]] = field(default_factory=dict)
    # Charts' parts before their seam, drawn ahead by the builder (`charts.Head`), by
    # (window, canary key).
    heads: dict[tuple[str, str], Head] = field(default_factory=dict)
    months: dict[str, list[Month]] = field(default_factory=dict)  # by canary (`sla.py`)
    # Some months are not counted yet (a server counts them between builds, `sla.py`).
    months_pending: bool = False
    # by canary: its months digested (`sla_pages.month_digest`), where the builder kept them
    month_digests: dict[str, str] = field(default_factory=dict)
    # incidents opened per (canary, month start)
    month_incidents: dict[tuple[str, date], int] = field(default_factory=dict)
    # by canary: the newest screenshot of each of its browser checks (`store/screenshots.py`)
    screenshots: dict[str, list[Screenshot]] = field(default_factory=dict)
    # enabled agents not heard from for the server's `--agent-silent-after` (`silence.py`)
    silent: list[SilentAgent] = field(default_factory=list)
    # The served revision's maintenance windows (`core/maintenance.py`).
    maintenance: list[MaintenanceWindow] = field(default_factory=list)
    # by canary, then region (None: all): (degraded, retried) runs of the last 24 hours
    outcome_counts: dict[str, dict[str | None, tuple[int, int]]] = field(default_factory=dict)
    # What pages work out from the rest and share (`shared`), by the page code's key:
    # filled as pages are drawn, in each render process.
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def shared(self, key: Any, make: Callable[[], T]) -> T:
        """What pages work out from the snapshot and share, made by the first that asks
        (in each render process) and kept in `derived` under `key`."""
        found = self.derived.get(key)
        if found is None:
            found = self.derived[key] = make()
        return cast(T, found)

    def figure(self, window: str, canary: str, region: str | None) -> Figures | None:
        """A stored figure, or None without runs."""
        return self.figures.get((window, canary, region))

    def chart(self, window: str, canary: str) -> tuple[Series | None, Tails | None, Head | None]:
        """A canary's chart in a window: its stored points and tail by region, and the part
        drawn ahead (`charts.latency_chart` draws it)."""
        key = (window, canary)
        return self.stored.get(window, {}).get(key), self.tails.get(key), self.heads.get(key)

    def region_names(self) -> list[str]:
        """The site's regions, sorted."""
        return [region.name for region in self.regions]


@dataclass
class Page:
    """One page to produce."""

    path: str
    template: str
    context: Callable[[], dict[str, Any]]
    key: str | None = None  # None: always rendered (then written only if its bytes changed)
    leaf: bool = False
    chart: tuple[str, str] | None = None  # the (window, canary) chart points it needs
    # Its template only prints its context's values whole or tests them for truth: it is
    # drawn by filling a skeleton rendered once per shape (`publish.py`), not through Jinja.
    flat: bool = False
    # A file written as these bytes, not rendered (a browser check's screenshot).
    raw: bytes | None = None

    @property
    def html(self) -> bool:
        """Whether the page is HTML (where trailing white space means nothing)."""
        return self.path.endswith(".html")


def fingerprint(*parts: Any) -> str:
    """A digest of JSON-serialisable parts (named tuples as lists)."""
    return hashlib.blake2b(orjson.dumps(parts, default=_as_list), digest_size=16).hexdigest()


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, tuple):  # a named tuple (orjson takes only plain ones)
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# Heartbeat checks are received rather than run, but listed with the others.
SHOWN_CHECK_TYPES = (*CHECK_TYPES, HEARTBEAT)


def _description(kind: str, check: dict[str, Any]) -> str:
    """A check's description as its canary's page shows it; a heartbeat says its pace."""
    text = str(check.get("description", ""))
    if kind != HEARTBEAT:
        return text
    pace = (
        f"a ping expected every {check['period']}, {check.get('grace', DEFAULT_GRACE)} late at most"
    )
    return f"{text} ({pace})" if text else pace


def canaries_of(resources: list[Resource]) -> list[CanaryInfo]:
    """The canaries of a revision with their derived canaries' regions, agents and checks."""
    derived: dict[str, list[Resource]] = {}
    for resource in resources:
        if resource.kind == "DerivedCanary" and resource.parent:
            derived.setdefault(resource.parent, []).append(resource)
    infos = []
    for canary in sorted((r for r in resources if r.kind == "Canary"), key=lambda r: r.name):
        mine = derived.get(canary.name, [])
        checks = tuple(
            (kind, str(check["name"]))
            for kind in SHOWN_CHECK_TYPES
            for check in canary.spec.get(kind, [])
        )
        notes = tuple(
            (
                _description(kind, check),
                ", ".join(f"{k}={v}" for k, v in sorted(check.get("labels", {}).items())),
                str(check.get("icon", "")),
            )
            for kind in SHOWN_CHECK_TYPES
            for check in canary.spec.get(kind, [])
        )
        about = tuple(
            (label, str(canary.spec[field]))
            for field, label in (("owner", "Owner"), ("severity", "Severity"), ("icon", "Icon"))
            if canary.spec.get(field)
        )
        infos.append(
            CanaryInfo(
                key=canary.name,
                ident=canary.name.replace("/", "."),
                regions=tuple(sorted({str(d.spec["region"]) for d in mine})),
                agents=tuple(sorted({d.agent for d in mine if d.agent})),
                checks=checks,
                about=about,
                check_notes=notes,
                slo=float(canary.spec["slo"]) if canary.spec.get("slo") is not None else None,
            )
        )
    return infos


def regions_of(resources: list[Resource], canaries: list[CanaryInfo]) -> list[RegionInfo]:
    """The regions canaries run in, with their display names where declared."""
    declared = {r.name: r.spec for r in resources if r.kind == "Region"}
    names = sorted({region for canary in canaries for region in canary.regions})
    return [
        RegionInfo(
            name,
            declared.get(name, {}).get("displayName"),
            declared.get(name, {}).get("location"),
        )
        for name in names
    ]


def _suffix(window: Window) -> str:
    return "" if window.name == DEFAULT_WINDOW.name else f"-{window.name}"


def overview_path(window: Window) -> str:
    """`index.html` (24 h), `index-7d.html`, `index-30d.html`."""
    return f"index{_suffix(window)}.html"


def region_path(region: str, window: Window) -> str:
    """`region-<name>.html`, `region-<name>-7d.html`, …"""
    return f"region-{region}{_suffix(window)}.html"


def canary_path(ident: str, window: Window) -> str:
    """`canary/<namespace>.<name>.html`, `canary/<namespace>.<name>-7d.html`, …"""
    return f"canary/{ident}{_suffix(window)}.html"


def screenshot_path(ident: str, check: str, started_at: datetime) -> str:
    """`screenshot/<namespace>.<name>/<digest>.png`: named by check and run, so a newer
    screenshot is a new file (no stale picture from a browser's cache)."""
    return f"screenshot/{ident}/{fingerprint(check, started_at.isoformat())}.png"


def sla_path(ident: str, extension: str = "html") -> str:
    """`sla/<namespace>.<name>.html` (and `.csv`, the same months as a table to download)."""
    return f"sla/{ident}.{extension}"


def link(source: str, target: str) -> str:
    """The relative URL of `target` from the page at `source` (both relative to the site root).

    Plain string work (this runs tens of thousands of times a build); `posixpath.relpath`
    gives the same answers, several times slower.
    """
    folder = source.rpartition("/")[0]
    if folder and target.startswith(folder + "/"):
        return target[len(folder) + 1 :]
    return "../" * source.count("/") + target
