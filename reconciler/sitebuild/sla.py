"""SLA reports: each canary's calendar months against its objective (`spec.slo`).

Month figures — runs, passes, exact p50/p95/p99, per canary and region and per canary — are
computed from raw rows, live or archived (`store.archive.source`), and kept in `site_months`:
a closed month once, again only if late rows arrive for it; the current month once a day,
through the start of the day (UTC). SLA pages therefore change once a day, not at every
build, and each says through when it counts. Quarters add up their months' runs and passes
(exact); their quantiles are not shown, since quantiles do not add up.

The error budget of a period is the failures its objective allows, `runs × (1 − slo/100)`;
*spent* is the failures counted over that, as a percentage (over 100 %: the objective was
missed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

from reconciler.core.outcomes import SQL_PASSES, SQL_RUNS
from reconciler.sitebuild.kept import months_token, new_token
from reconciler.sitebuild.tables import Tables, read_meta, write_meta
from reconciler.sitebuild.windows import DAY
from reconciler.store.archive import source
from reconciler.store.db import Connection
from reconciler.store.results import newest_received

MONTHS_KEPT = 13  # this month and the twelve before it
CHECKED = "months.checked"  # received_at watermark (µs) of the late-row check
# Months whose last count found no run (so no row of `site_months` says how far they were
# counted), as JSON: {month's first day (ISO): counted through (s)}.
EMPTY = "months.empty"


@dataclass(frozen=True)
class Month:
    """One canary's figures for one calendar month (region None: every region)."""

    month: date
    region: str | None
    runs: int
    passes: int
    p50: float | None
    p95: float | None
    p99: float | None
    through: int  # rows started before this (s) are counted


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def epoch_of(day: date) -> int:
    """The start of a UTC day, in seconds since the epoch."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def refresh_months(
    connection: Connection, tables: Tables, now: int, most: int | None = None
) -> list[date]:
    """Compute the months that are missing, behind the start of today, or got late rows (on
    a writing connection, in the caller's transaction), newest first and at most `most` of
    them (None: all; a month of raw rows is seconds of work at a large fleet, so a server
    fills a year in over several calls). Returns the months computed."""
    today = now // DAY * DAY
    current = month_start(datetime.fromtimestamp(today, UTC).date())
    months = [current]
    while len(months) < MONTHS_KEPT:
        previous = months[-1]
        months.append(month_start(date.fromordinal(previous.toordinal() - 1)))
    months.reverse()
    meta = read_meta(connection, tables)
    # How far each month was counted: its rows say, or else its entry among the empty ones
    # (the current month on its first day has nothing before today: counted all the same,
    # it would otherwise be due at every call, ahead of every older month).
    empty = _empty(meta)
    stored = {
        **empty,
        **dict(
            connection.execute(
                f"SELECT month, min(through) FROM {tables.named('months')} GROUP BY month"
            ).fetchall()
        ),
    }
    checked = int(meta.get(CHECKED, "0"))
    received = newest_received(connection, checked or None) or checked
    late: set[date] = set()
    if checked:
        # Rows received since the last check that started before today: in a month's
        # counted part (every month is counted to the start of today at most).
        late = {
            row[0]
            for row in connection.execute(
                """SELECT DISTINCT date_trunc('month', started_at AT TIME ZONE 'UTC')::DATE
                   FROM results
                   WHERE received_at > make_timestamptz($checked) AND started_at < $today""",
                {"checked": checked, "today": datetime.fromtimestamp(today, UTC)},
            ).fetchall()
        }
    due = []
    for month in months:
        end = min(epoch_of(next_month(month)), today)
        counted = stored.get(month)
        if counted is None or counted < end or (month in late and counted >= epoch_of(month)):
            due.append((month, end))
    # The scan of every start (30-170 ms at 50 M rows) only when a month is due: once a day
    # with a year of history, but every call while months before the first result are kept.
    if due:
        earliest = _earliest(connection)
        # Months that ended before the first result have nothing to count, ever.
        due = [(month, end) for month, end in due if earliest is not None and end > earliest]
    due.sort(reverse=True)
    for month, end in due[:most]:
        if _compute(connection, tables, month, end):
            empty.pop(month, None)
        else:
            empty[month] = end
    dropped = connection.execute(
        f"DELETE FROM {tables.named('months')} WHERE month < $first", {"first": months[0]}
    ).fetchall()
    values = {}
    kept = json.dumps({m.isoformat(): end for m, end in sorted(empty.items()) if m >= months[0]})
    if kept != meta.get(EMPTY, "{}"):
        values[EMPTY] = kept
    if due[:most] or (dropped and dropped[0][0]):
        values[months_token()] = new_token()  # the months changed (`kept.py`)
    if most is None or len(due) <= most:
        # Everything due is counted: late rows received so far are in. (Otherwise the next
        # call looks at the same late rows again, and counts what is left.)
        values[CHECKED] = str(received)
    if values:
        write_meta(connection, tables, values)
    return [month for month, _ in due[:most]]


def _earliest(connection: Connection) -> int | None:
    """The start (s) of the earliest result, live or archived (to the day), or None."""
    row = connection.execute(
        """SELECT least((SELECT epoch(min(started_at)) FROM results),
                        (SELECT epoch(min(day)) FROM archive_files))"""
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _empty(meta: dict[str, str]) -> dict[date, int]:
    """The months whose last count found no run (`EMPTY`), and how far each was counted."""
    found: dict[str, int] = json.loads(meta.get(EMPTY, "{}"))
    return {date.fromisoformat(month): int(end) for month, end in found.items()}


def _compute(connection: Connection, tables: Tables, month: date, end: int) -> bool:
    """Count a month through `end` (s) into `site_months`; returns whether it had runs."""
    start = epoch_of(month)
    since, until = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    connection.execute(f"DELETE FROM {tables.named('months')} WHERE month = $m", {"m": month})
    if end <= start:
        return False
    inserted = connection.execute(
        f"""INSERT INTO {tables.named("months")}
            SELECT parent, region, $m, runs, passes, q[1], q[2], q[3], $through
            FROM (SELECT parent, region, {SQL_RUNS} AS runs, {SQL_PASSES} AS passes,
                         quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q
                  FROM {source(connection, since, until)}
                  WHERE started_at >= $since AND started_at < $until
                  GROUP BY GROUPING SETS ((parent, region), (parent)))""",
        {"m": month, "through": end, "since": since, "until": until},
    ).fetchall()
    return bool(inserted and inserted[0][0])


def months_pending(meta: dict[str, str]) -> bool:
    """Whether some months are not counted yet, from the site's meta (`read_meta`): the
    late-row watermark is written once a count left nothing due (a server's first build
    counts none, and the calls between builds one month each, newest first)."""
    return CHECKED not in meta


def months_of(connection: Connection, tables: Tables) -> dict[str, list[Month]]:
    """Every canary's stored months, oldest first."""
    found: dict[str, list[Month]] = {}
    for row in connection.execute(
        f"""SELECT parent, month, region, runs, passes, p50, p95, p99, through
            FROM {tables.named("months")} ORDER BY parent, month, region NULLS FIRST"""
    ).fetchall():
        found.setdefault(row[0], []).append(Month(*row[1:]))
    return found


def budget_spent(runs: int, passes: int, slo: float | None) -> float | None:
    """Failures as a percentage of those the objective allows (None: no objective or runs)."""
    if slo is None or runs == 0:
        return None
    allowed = runs * (1 - slo / 100)
    failures = runs - passes
    if allowed <= 0:
        return None
    return 100.0 * failures / allowed


def quarter_of(month: date) -> str:
    """`2026-Q4`."""
    return f"{month.year}-Q{(month.month - 1) // 3 + 1}"
