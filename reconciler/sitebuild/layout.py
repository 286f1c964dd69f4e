"""What pages share: navigation, the build stamp, window links, statuses and figures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from reconciler.core.sketch import ALPHA
from reconciler.core.status import SEVERITY as STATUS_SEVERITY
from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.model import (
    DEPLOYMENTS,
    INCIDENTS,
    INDEX,
    SLA,
    STATUS,
    STYLESHEET,
    Snapshot,
    canary_path,
    link,
)
from reconciler.sitebuild.queries import Figures, WindowState
from reconciler.sitebuild.windows import WINDOWS, Window

_CURRENT = ' aria-current="page"'
SEVERITY = {status.value: rank for status, rank in STATUS_SEVERITY.items()}
SKETCH_NOTE = f"Latency percentiles come from histograms: within {ALPHA:.0%} of the exact value."

_NAV = (
    ("Overview", INDEX, "overview"),
    ("Status", STATUS, "status"),
    ("Incidents", INCIDENTS, "incidents"),
    ("Deployments", DEPLOYMENTS, "deployments"),
    ("SLA", SLA, "sla"),
)


@functools.lru_cache(maxsize=8192)
def html(text: str) -> str:
    """`text` escaped for HTML, remembered: names and links repeat across thousands of rows."""
    return str(escape(text))


def base_context(path: str, title: str, section: str) -> dict[str, Any]:
    """The layout's fields: title, stylesheet and site navigation, linked relative to `path`."""
    folder = path.rpartition("/")[0]
    current = path if any(target == path for _, target, _ in _NAV) else None
    return {
        "title": title,
        "stylesheet": link(path, STYLESHEET),
        "home": link(path, INDEX),
        "nav": _nav(folder, current, section),
    }


@functools.lru_cache(maxsize=64)
def _nav(folder: str, current: str | None, section: str) -> Markup:
    """The site navigation's items, for pages in `folder` (the same for every canary page)."""
    # Links depend on the folder only (and on which page is current, for the top pages).
    path = current if current else f"{folder}/page" if folder else "page"
    items = []
    for label, target, name in _NAV:
        mark = "page" if target == current else "true" if section == name else None
        attribute = f' aria-current="{mark}"' if mark else ""
        items.append(f'      <li><a href="{link(path, target)}"{attribute}>{label}</a></li>\n')
    return Markup("".join(items))


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


@functools.lru_cache(maxsize=16)
def window_view(state: WindowState | None, window: Window) -> dict[str, Any]:
    """A window's name, label and bounds as pages show them (`range`: the sentence saying
    them). The same for every page of the window: computed once."""
    if state is None:
        sentence = f'<p class="range">{window.label}: not computed yet.</p>'
        return {"name": window.name, "label": window.label, "range": Markup(sentence)}
    start, end = fmt.moment(state.start), fmt.moment(state.end)
    # Figures include every run up to the build (the open part, `live.py`): the sentence
    # names no end, so pages without new runs stay the same from one build to the next.
    sentence = (
        f'<p class="range">{window.label}: runs from '
        f'<time datetime="{fmt.iso(state.start)}">{start}</time> up to this build'
    )
    if window.days is not None:
        sentence += f" (today and the previous {window.days - 1} days)"
    return {
        "name": window.name,
        "label": window.label,
        "start": start,
        "end": end,
        "range": Markup(sentence + "</p>"),
    }


def switcher(path: str, target: Callable[[Window], str], current: Window) -> Markup:
    """Links to the same page in each window (the tabs' list items)."""
    return Markup(
        "".join(
            f'    <li><a href="{escape(link(path, target(w)))}"'
            f"{_CURRENT if w == current else ''}>{w.label}</a></li>\n"
            for w in WINDOWS
        )
    )


@functools.lru_cache(maxsize=16)
def _canary_tabs(current: Window) -> str:
    """`switcher` for a canary page, as a format of its page name: every canary page is in
    one folder, so the links differ only by the name."""
    return str(switcher(canary_path("{0}", current), lambda w: canary_path("{0}", w), current))


def canary_switcher(ident: str, current: Window) -> Markup:
    """Links to a canary's page in each window, from one of its pages (`switcher`)."""
    return Markup(_canary_tabs(current).format(escape(ident)))


def region_state(snapshot: Snapshot, canary: str, region: str) -> dict[str, Any]:
    """A canary's status in one region (core/status.py) and its last run there."""
    regions = snapshot.statuses.get(canary, {}).get("region_status", {})
    found: dict[str, Any] = regions.get(region, {"status": "unknown", "last_run": None})
    return found


def region_status(snapshot: Snapshot, canary: str, region: str) -> str:
    """A canary's status in one region (`core.status.Status`: operational … paused)."""
    return str(region_state(snapshot, canary, region)["status"])


def blended(snapshot: Snapshot, canary: str) -> str:
    """A canary's status blended across its regions (unknown without recent runs)."""
    return str(snapshot.statuses.get(canary, {}).get("status", "unknown"))


def badge(status: str, run: dict[str, Any] | None) -> str:
    """A status badge with the last run beside it, as HTML."""
    shown = f'<span class="badge status-{html(status)}">{html(fmt.status_label(status))}</span>'
    if run is None:
        return shown
    outcome = fmt.run_outcome(run)
    return f'{shown} <span class="last-run last-{outcome}">{fmt.last_run(run)}</span>'


def figure_cells(figure: Figures | None, compact: bool = False) -> dict[str, str]:
    """Uptime, p50, p95 and runs, formatted (with `compact`: latencies as `fmt.brief_millis`,
    runs as `fmt.compact`)."""
    if figure is None:
        return {"uptime": fmt.NO_DATA, "p50": fmt.NO_DATA, "p95": fmt.NO_DATA, "runs": "0"}
    if compact:
        return _compact_cells(figure)
    return {
        "uptime": fmt.percent(figure.passes, figure.runs),
        "p50": fmt.millis(figure.p50),
        "p95": fmt.millis(figure.p95),
        "runs": fmt.count(figure.runs),
    }


@functools.lru_cache(maxsize=16384)  # a build's summary figures at 1,000 canaries: 12,000
def _compact_cells(figure: Figures) -> dict[str, str]:
    """`figure_cells(figure, compact=True)`, remembered (never change what it returns): the
    page plan formats a `summary` page's figures for its key, and the render processes,
    forked after it, find them here when they draw the page."""
    return {
        "uptime": fmt.percent(figure.passes, figure.runs),
        "p50": fmt.brief_millis(figure.p50),
        "p95": fmt.brief_millis(figure.p95),
        "runs": fmt.compact(figure.runs),
    }


def refusal_mark(snapshot: Snapshot) -> tuple[str, str] | None:
    """What the refusal banner shows that a keyed page's key must carry (`refusal_banner`):
    a page drawn before a refusal, or before it cleared, is drawn again."""
    refusal = snapshot.refusal
    return None if refusal is None else (refusal.label, refusal.refused_at.isoformat())


def refusal_banner(snapshot: Snapshot) -> Markup | None:
    """The banner every page carries while the newest revision is refused: the commit, its
    first error (file:line where the loader knows it) and the revision still served."""
    refusal = snapshot.refusal
    if refusal is None:
        return None
    first = refusal.errors[0] if refusal.errors else "no error was recorded"
    more = len(refusal.errors) - 1
    others = f" ({more} more error{'s' if more > 1 else ''})" if more > 0 else ""
    served = refusal.served_label
    if served is None and snapshot.revision and snapshot.revision.get("sha"):
        served = str(snapshot.revision["sha"])[:12]
    still = f"<code>{escape(served)}</code>" if served else "no revision yet"
    when = refusal.refused_at
    return Markup(
        '<aside class="banner refused" role="status" aria-label="Configuration refused">\n'
        f"  <p><strong>Commit <code>{escape(refusal.label)}</code> was refused</strong> at "
        f'<time datetime="{fmt.iso(when)}">{fmt.moment(when)}</time>{others}:</p>\n'
        f'  <p class="error"><code>{escape(first)}</code></p>\n'
        f"  <p>Still serving {still}: these pages show that configuration.</p>\n</aside>\n"
    )
