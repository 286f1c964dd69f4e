"""Maintenance windows on the site: open and upcoming ones on the status, overview and canary
pages, and each SLA month's windows (the windows are the served revision's)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any

from markupsafe import Markup

from reconciler.core.maintenance import Occurrence, Window, active, in_period, upcoming
from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.model import Snapshot
from reconciler.sitebuild.sla import next_month

# How far ahead the pages list windows, and how many openings of one month an SLA page lists.
UPCOMING_HORIZON = timedelta(days=7)
MONTH_LISTED = 31
# Canaries named beside a window on the fleet pages (a window may cover the whole fleet).
CANARIES_LISTED = 10
EXCLUDED_NOTE = "Runs inside a maintenance window are left out of uptime."


def _now(snapshot: Snapshot) -> datetime:
    return datetime.fromtimestamp(snapshot.now, UTC)


def _windows(snapshot: Snapshot, canary: str | None) -> list[Window]:
    if canary is None:
        return snapshot.maintenance
    return [w for w in snapshot.maintenance if canary in w.canaries]


def _item(occurrence: Occurrence, with_canaries: bool) -> str:
    where = f" in {', '.join(occurrence.regions)}" if occurrence.regions else ""
    shown = occurrence.canaries[:CANARIES_LISTED]
    more = len(occurrence.canaries) - len(shown)
    what = f": {', '.join(shown)}{f' and {more} more' if more else ''}" if with_canaries else ""
    described = f" — {occurrence.description}" if occurrence.description else ""
    return (
        f"<li><strong>{escape(occurrence.window)}</strong>{escape(described)}, "
        f'<time datetime="{fmt.iso(occurrence.start)}">{fmt.moment(occurrence.start)}</time> to '
        f'<time datetime="{fmt.iso(occurrence.end)}">{fmt.moment(occurrence.end)}</time>'
        f"{escape(where)}{escape(what)}</li>\n"
    )


def openings(snapshot: Snapshot, canary: str | None) -> tuple[list[Occurrence], list[Occurrence]]:
    """The windows open at the build's time and those starting within a week."""
    windows, now = _windows(snapshot, canary), _now(snapshot)
    return active(windows, now), upcoming(windows, now, UPCOMING_HORIZON)


def section(
    snapshot: Snapshot, canary: str | None = None, region: str | None = None
) -> Markup | None:
    """A "Maintenance" section: windows in progress and upcoming (of one canary, or all with
    the canaries each covers; on a region's page, those covering a canary there, with those
    canaries); None when there are none."""
    now_open, coming = openings(snapshot, canary)
    if region is not None:
        now_open = _in_region(snapshot, now_open, region)
        coming = _in_region(snapshot, coming, region)
    if not now_open and not coming:
        return None
    parts = [
        '<section class="maintenance" aria-labelledby="maintenance-heading">\n'
        '<h2 id="maintenance-heading">Maintenance</h2>\n'
    ]
    for title, found in (("In progress", now_open), ("Upcoming (next 7 days)", coming)):
        if found:
            items = "".join(_item(o, canary is None) for o in found)
            parts.append(f"<h3>{title}</h3>\n<ul>\n{items}</ul>\n")
    parts.append(f'<p class="note">{EXCLUDED_NOTE} No incident opens from them.</p>\n</section>\n')
    return Markup("".join(parts))


def _in_region(snapshot: Snapshot, found: list[Occurrence], region: str) -> list[Occurrence]:
    """The openings that cover a canary running in `region`, naming only those canaries."""
    there = {c.key for c in snapshot.canaries if region in c.regions}
    kept = []
    for occurrence in found:
        if occurrence.regions and region not in occurrence.regions:
            continue
        canaries = tuple(key for key in occurrence.canaries if key in there)
        if canaries:
            kept.append(dataclasses.replace(occurrence, canaries=canaries))
    return kept


def digest(snapshot: Snapshot, canary: str | None) -> list[Any]:
    """What `section` shows, for a page's key."""
    now_open, coming = openings(snapshot, canary)
    return [o.document() for o in now_open + coming]


def month_windows(snapshot: Snapshot, canary: str, month: date) -> list[Occurrence]:
    """The openings of a canary's windows that overlap one calendar month (UTC)."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime.combine(next_month(month), datetime.min.time(), UTC)
    return in_period(_windows(snapshot, canary), start, end)


def month_rows(snapshot: Snapshot, canary: str, months: list[date]) -> list[dict[str, Any]]:
    """Per month with windows (newest first): each opening as text, and how many more."""
    rows = []
    for month in sorted(months, reverse=True):
        found = month_windows(snapshot, canary, month)
        if not found:
            continue
        rows.append(
            {
                "label": month.strftime("%B %Y"),
                "windows": [
                    {
                        "name": o.window,
                        "description": o.description or "",
                        "start": fmt.moment(o.start),
                        "end": fmt.moment(o.end),
                        "regions": ", ".join(o.regions) or "all regions",
                    }
                    for o in found[:MONTH_LISTED]
                ],
                "more": max(0, len(found) - MONTH_LISTED),
            }
        )
    return rows
