"""The SLA report pages: every canary's months against its objective, a page (and a CSV) per
canary with its months, quarters and regions (figures from `sla.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from markupsafe import Markup

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild import maintenance_view
from reconciler.sitebuild.layout import base_context, refusal_mark, stamp
from reconciler.sitebuild.model import (
    SLA,
    CanaryInfo,
    Snapshot,
    canary_path,
    fingerprint,
    link,
    sla_path,
)
from reconciler.sitebuild.sla import (
    Month,
    budget_spent,
    epoch_of,
    month_start,
    next_month,
    quarter_of,
)
from reconciler.sitebuild.windows import WINDOWS

# What the SLA pages say while some months are not counted yet (`Snapshot.months_pending`).
PENDING_NOTE = (
    "Some months are not counted yet: the server counts them between its builds, one a "
    "build, newest first (a month of runs takes seconds at a large fleet). Those missing "
    "below follow within minutes."
)
# What an SLA page's tables say when no month of the canary has runs counted: its runs may
# be today's alone, shown everywhere else on the site.
NOTHING_COUNTED = (
    "Nothing counted yet: a month counts the runs up to the start of the current day (UTC), "
    "so today's runs show here from tomorrow."
)
CSV_HEADER = (
    "month,region,runs,passes,uptime_percent,slo_percent,budget_spent_percent,incidents,"
    "p50_ms,p95_ms,p99_ms,counted_until,maintenance_windows\n"
)


def _slo(canary: CanaryInfo) -> str:
    return fmt.NO_DATA if canary.slo is None else f"{canary.slo:g}%"


def _budget(runs: int, passes: int, slo: float | None) -> str:
    spent = budget_spent(runs, passes, slo)
    return fmt.NO_DATA if spent is None else f"{spent:,.1f}%"


def _met(runs: int, passes: int, slo: float | None) -> str:
    """`met`, `missed` or `` (no objective or no runs)."""
    if slo is None or not runs:
        return ""
    return "met" if passes * 100 >= slo * runs else "missed"


def _through(month: Month) -> str:
    return datetime.fromtimestamp(month.through, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _partial(month: Month) -> str | None:
    """`to 2026-11-18 00:00 UTC` for a month still counting (its end not reached), else None."""
    if month.through >= epoch_of(next_month(month.month)):
        return None
    return f"to {_through(month)}"


def _label(month: date) -> str:
    return month.strftime("%B %Y")


def sla_key(snapshot: Snapshot, canary: CanaryInfo) -> str:
    """Everything a canary's SLA page shows: it is drawn again only when this moves."""
    months = snapshot.months.get(canary.key, [])
    incidents = [snapshot.month_incidents.get((canary.key, m.month), 0) for m in months]
    digest = snapshot.month_digests.get(canary.key)
    return fingerprint(
        canary.slo,
        canary.regions,
        refusal_mark(snapshot),
        snapshot.months_pending,
        month_digest(months) if digest is None else digest,
        incidents,
        [
            [o.document() for o in maintenance_view.month_windows(snapshot, canary.key, month)]
            for month in _months_shown(snapshot, canary.key)
        ],
    )


def month_digest(months: list[Month]) -> str:
    """What a canary's SLA page shows of its stored months, digested (`sla_key`; a builder
    keeps them from build to build with the months, `SiteBuilder._months`)."""
    return fingerprint(
        [(str(m.month), m.region, m.runs, m.passes, m.p50, m.p95, m.p99, m.through) for m in months]
    )


def _months_shown(snapshot: Snapshot, canary: str) -> list[date]:
    """The months whose maintenance windows a page lists: those with figures, and the
    current one (whose figures may not be counted yet)."""
    current = month_start(datetime.fromtimestamp(snapshot.now, UTC).date())
    counted = {m.month for m in snapshot.months.get(canary, [])}
    return sorted(counted | {current})


def _overall(months: Sequence[Month]) -> list[Month]:
    return [m for m in months if m.region is None]


def canary_sla_context(snapshot: Snapshot, canary: CanaryInfo) -> dict[str, Any]:
    """A canary's SLA page: months (newest first), quarters, and each month per region."""
    path = sla_path(canary.ident)
    months = snapshot.months.get(canary.key, [])
    overall = _overall(months)
    by_region = {(m.month, m.region): m for m in months if m.region is not None}
    regions = sorted({m.region for m in months if m.region is not None})
    rows = []
    for month in reversed(overall):
        incidents = snapshot.month_incidents.get((canary.key, month.month), 0)
        rows.append(
            {
                "label": _label(month.month),
                "partial": _partial(month),
                "runs": fmt.count(month.runs),
                "uptime": fmt.percent(month.passes, month.runs),
                "met": _met(month.runs, month.passes, canary.slo),
                "budget": _budget(month.runs, month.passes, canary.slo),
                "incidents": incidents,
                "p50": fmt.millis(month.p50),
                "p95": fmt.millis(month.p95),
                "p99": fmt.millis(month.p99),
                "regions": [
                    fmt.percent(found.passes, found.runs)
                    if (found := by_region.get((month.month, region)))
                    else fmt.NO_DATA
                    for region in regions
                ],
            }
        )
    quarters: dict[str, list[Month]] = {}
    for month in overall:
        quarters.setdefault(quarter_of(month.month), []).append(month)
    quarter_rows = []
    for name in sorted(quarters, reverse=True):
        runs = sum(m.runs for m in quarters[name])
        passes = sum(m.passes for m in quarters[name])
        quarter_rows.append(
            {
                "label": name,
                "partial": _partial(quarters[name][-1]),
                "runs": fmt.count(runs),
                "uptime": fmt.percent(passes, runs),
                "met": _met(runs, passes, canary.slo),
                "budget": _budget(runs, passes, canary.slo),
                "incidents": sum(
                    snapshot.month_incidents.get((canary.key, m.month), 0) for m in quarters[name]
                ),
            }
        )
    return {
        # No build stamp: a canary's SLA page is drawn again only when its months change, so
        # the stamp would tell an older build than the other pages'. Its months say how far
        # they are counted.
        **base_context(path, f"SLA: {canary.key}", "sla"),
        "heading": f"SLA report: {canary.key}",
        "slo": _slo(canary),
        "has_slo": canary.slo is not None,
        "canary_href": link(path, canary_path(canary.ident, WINDOWS[0])),
        "index_href": link(path, SLA),
        "csv_href": link(path, sla_path(canary.ident, "csv")),
        "regions": regions,
        "months": rows,
        "quarters": quarter_rows,
        "pending": PENDING_NOTE if snapshot.months_pending else None,
        "nothing_counted": NOTHING_COUNTED,
        "maintenance": maintenance_view.month_rows(
            snapshot, canary.key, _months_shown(snapshot, canary.key)
        ),
        "maintenance_note": maintenance_view.EXCLUDED_NOTE,
    }


def canary_sla_csv(snapshot: Snapshot, canary: CanaryInfo) -> dict[str, Any]:
    """The CSV of a canary's months, every region and all regions (`region` empty)."""
    lines = [CSV_HEADER]
    for month in snapshot.months.get(canary.key, []):
        incidents = (
            snapshot.month_incidents.get((canary.key, month.month), 0)
            if month.region is None
            else ""
        )
        spent = budget_spent(month.runs, month.passes, canary.slo)
        cells = [
            month.month.isoformat(),
            month.region or "",
            str(month.runs),
            str(month.passes),
            f"{100 * month.passes / month.runs:.4f}" if month.runs else "",
            f"{canary.slo:g}" if canary.slo is not None else "",
            f"{spent:.2f}" if spent is not None else "",
            str(incidents),
            *(f"{q:.1f}" if q is not None else "" for q in (month.p50, month.p95, month.p99)),
            fmt.iso(month.through),
            str(
                sum(
                    1
                    for o in maintenance_view.month_windows(snapshot, canary.key, month.month)
                    if month.region is None or not o.regions or month.region in o.regions
                )
            ),
        ]
        lines.append(",".join(cells) + "\n")
    return {"csv": Markup("".join(lines))}


def sla_index_context(snapshot: Snapshot) -> dict[str, Any]:
    """Every canary's objective, this month and last month."""
    rows = []
    for canary in snapshot.canaries:
        overall = _overall(snapshot.months.get(canary.key, []))
        current = overall[-1] if overall else None
        previous = overall[-2] if len(overall) > 1 else None
        cells = []
        for month in (current, previous):
            if month is None:
                cells.append((fmt.NO_DATA, fmt.NO_DATA, ""))
            else:
                cells.append(
                    (
                        fmt.percent(month.passes, month.runs),
                        _budget(month.runs, month.passes, canary.slo),
                        _met(month.runs, month.passes, canary.slo),
                    )
                )
        rows.append(
            {
                "name": canary.key,
                "href": link(SLA, sla_path(canary.ident)),
                "slo": _slo(canary),
                "current": cells[0],
                "previous": cells[1],
            }
        )
    some = next((m for ms in snapshot.months.values() for m in reversed(ms)), None)
    this_month = month_start(datetime.fromtimestamp(snapshot.now, UTC).date())
    last_month = month_start(date.fromordinal(this_month.toordinal() - 1))
    return {
        **base_context(SLA, "SLA reports", "sla"),
        **stamp(snapshot),
        "heading": "SLA reports",
        "through": _through(some) if some else None,
        "current_label": _label(this_month),
        "previous_label": _label(last_month),
        "rows": rows,
        "pending": PENDING_NOTE if snapshot.months_pending else None,
        # A fleet's first day: every cell reads "—", while its runs show on every other page.
        "nothing_counted": (
            NOTHING_COUNTED if rows and some is None and not snapshot.months_pending else None
        ),
    }
