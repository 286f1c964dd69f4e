"""Read-side reports over stored check results and revisions, computed by DuckDB."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from reconciler.core.outcomes import SQL_DEGRADED, SQL_PASSES, SQL_RETRIED, SQL_RUNS
from reconciler.core.resources import Resource
from reconciler.core.sketch import ALPHA, BIN_SQL, quantiles_sql
from reconciler.core.status import document
from reconciler.store import days
from reconciler.store.archive import DAY_SECONDS, source
from reconciler.store.db import Connection
from reconciler.store.handle import StateHandle
from reconciler.store.status import canary_statuses

# Every report rounds durations to the microsecond (3 decimals of a millisecond), so JSON
# shows 85.5 rather than 85.49999999999999.
_QUANTILES = "list_transform(quantile_cont(duration_ms, [0.5, 0.95, 0.99]), lambda q: round(q, 3))"
_RFC3339 = "'%Y-%m-%dT%H:%M:%S.%fZ'"
# Timestamps leave DuckDB as RFC 3339 text in UTC, whatever the session's TimeZone.
_ISO_STARTED = f"strftime(make_timestamp(epoch_us(started_at)), {_RFC3339})"
# A step too long for a BIGINT of µs (999999999d) makes $step a HUGEINT; the bucket start
# itself is never later than the run's start, so it fits.
_BUCKET = "(epoch_us(started_at) // $step * $step)::BIGINT"
_BUCKET_AT = "strftime(make_timestamp(bucket), '%Y-%m-%dT%H:%M:%SZ')"
# A sum over no rows is NULL; a window without runs has 0 of each.
_SUM = "coalesce(sum({}), 0)::BIGINT"
_SCOPE = """parent = $parent AND started_at >= $since AND started_at < $until
            AND ($region::VARCHAR IS NULL OR region = $region)"""


# Latency over a range longer than this (s) is read off per-day histograms (`store/days.py`)
# when its buckets are whole days: quantiles within ALPHA of the exact ones.
LONG_RANGE = 31 * DAY_SECONDS


def _whole_days(since: datetime, until: datetime) -> tuple[int, int] | None:
    """The whole UTC days [first, last) inside [since, until), or None when there are none."""
    first = -(-int(since.timestamp()) // DAY_SECONDS)
    last = int(until.timestamp()) // DAY_SECONDS
    return (first, last) if first < last else None


def _edges(
    since: datetime, until: datetime, first: int, last: int
) -> list[tuple[datetime, datetime]]:
    """The partial days around [first, last): raw rows are read only there."""
    start, end = _day_at(first), _day_at(last)
    return [(low, high) for low, high in ((since, start), (end, until)) if low < high]


def _edge_parameters(parent: str, index: int, low: datetime, high: datetime) -> dict[str, Any]:
    """The parameters of the raw-row part for partial day `index`, [low, high).

    `$parent` goes with them rather than with the whole statement: DuckDB refuses a
    parameter the statement does not use, and a range of whole days (both ends at UTC
    midnight) has no partial day, so no part that reads it.
    """
    return {"parent": parent, f"lo{index}": low, f"hi{index}": high}


def _day_at(day: int) -> datetime:
    return datetime.fromtimestamp(day * DAY_SECONDS, UTC)


def _scope(parent: str, since: datetime, until: datetime, region: str | None) -> dict[str, Any]:
    return {"parent": parent, "since": since, "until": until, "region": region}


def _ratio(passed: int, total: int) -> float | None:
    return passed / total if total else None


def _quantiles(values: Sequence[float] | None) -> dict[str, float | None]:
    p50, p95, p99 = values if values is not None else (None, None, None)
    return {"p50": p50, "p95": p95, "p99": p99}


def recent_results(
    connection: Connection,
    parent: str,
    since: datetime,
    until: datetime,
    region: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A canary's runs in a time window, newest first.

    Args:
        connection: a state file connection or cursor.
        parent: the canary key (`namespace/name`).
        since: first start time included.
        until: start times before this are included.
        region: only this region's runs, or every region's when None.
        limit: at most this many rows.

    Returns:
        One dict per run: agent, region, check, started_at (RFC 3339), duration_ms, status,
        retries, code, message and phases.
    """
    rows = connection.execute(
        f"""SELECT agent, region, check_name, {_ISO_STARTED}, duration_ms, status,
                   coalesce(retries, 0), code, message, phases
            FROM {source(connection, since, until)} WHERE {_SCOPE}
            ORDER BY started_at DESC, agent, check_name LIMIT $limit""",
        {**_scope(parent, since, until, region), "limit": limit},
    ).fetchall()
    return [
        {
            "agent": agent,
            "region": region_,
            "check": check,
            "started_at": started_at,
            "duration_ms": duration_ms,
            "status": status,
            "retries": retries,
            "code": code,
            "message": message,
            "phases": orjson.loads(phases) if phases is not None else None,
        }
        for (
            agent,
            region_,
            check,
            started_at,
            duration_ms,
            status,
            retries,
            code,
            message,
            phases,
        ) in rows
    ]


def uptime(
    connection: Connection, parent: str, since: datetime, until: datetime, region: str | None
) -> dict[str, Any]:
    """Runs, passed runs and their ratio for a canary in a window, overall and per check,
    with the passed runs that were degraded or passed only after retries counted apart.

    Args:
        connection: a state file connection or cursor.
        parent: the canary key (`namespace/name`).
        since: first start time included.
        until: start times before this are included.
        region: only this region's runs, or every region's when None.

    Returns:
        `total`, `passed`, `degraded` and `retried` (both among `passed`), `uptime` (passed /
        total, None without runs) and `checks`: the same per check name, sorted by name.
    """
    whole = _whole_days(since, until)
    if whole is None:
        rows = connection.execute(
            f"""SELECT check_name, grouping(check_name) AS overall, {SQL_RUNS}, {SQL_PASSES},
                       {SQL_DEGRADED}, {SQL_RETRIED}
                FROM {source(connection, since, until)} WHERE {_SCOPE}
                GROUP BY GROUPING SETS ((), (check_name))
                ORDER BY overall DESC, check_name""",
            _scope(parent, since, until, region),
        ).fetchall()
    else:
        rows = _uptime_by_days(connection, parent, since, until, region, *whole)
    figures: dict[str, Any] = {"total": 0, "passed": 0, "degraded": 0, "retried": 0}
    checks = []
    for check, overall, count, ok, degraded, retried in rows:
        counts = {"total": count, "passed": ok, "degraded": degraded, "retried": retried}
        if overall:
            figures = counts
        else:
            checks.append({"check": check, **counts, "uptime": _ratio(ok, count)})
    passed, total = figures["passed"], figures["total"]
    return {**figures, "uptime": _ratio(passed, total), "checks": checks}


def _uptime_by_days(
    connection: Connection,
    parent: str,
    since: datetime,
    until: datetime,
    region: str | None,
    first: int,
    last: int,
) -> list[tuple[Any, ...]]:
    """`uptime`'s rows from the per-day tier for the whole days [first, last) and raw rows
    for the partial days around them: the same sums, without reading a year of rows."""
    tier, parameters = days.relation(connection, first, last, parent)
    parts = [
        f"""SELECT check_name, runs, passes, degraded, retried FROM {tier}
            WHERE $region::VARCHAR IS NULL OR region = $region"""
    ]
    for index, (low, high) in enumerate(_edges(since, until, first, last)):
        parts.append(
            f"""SELECT check_name, {SQL_RUNS}, {SQL_PASSES}, {SQL_DEGRADED}, {SQL_RETRIED}
                FROM {source(connection, low, high)}
                WHERE parent = $parent AND started_at >= $lo{index} AND started_at < $hi{index}
                  AND ($region::VARCHAR IS NULL OR region = $region)
                GROUP BY check_name"""
        )
        parameters.update(_edge_parameters(parent, index, low, high))
    return connection.execute(
        f"""SELECT check_name, grouping(check_name) AS overall, {_SUM.format("runs")},
                   {_SUM.format("passes")}, {_SUM.format("degraded")}, {_SUM.format("retried")}
            FROM ({" UNION ALL ".join(parts)})
            GROUP BY GROUPING SETS ((), (check_name))
            ORDER BY overall DESC, check_name""",
        {**parameters, "region": region},
    ).fetchall()


def latency(
    connection: Connection,
    parent: str,
    since: datetime,
    until: datetime,
    region: str | None,
    step_seconds: int,
) -> dict[str, Any]:
    """p50/p95/p99 of a canary's run durations over a window and per time bucket.

    Every run counts, whatever its status. Buckets are `step_seconds` wide, aligned to the
    Unix epoch; buckets without runs are left out of the series.

    Args:
        connection: a state file connection or cursor.
        parent: the canary key (`namespace/name`).
        since: first start time included.
        until: start times before this are included.
        region: only this region's runs, or every region's when None.
        step_seconds: the bucket width.

    Returns:
        `count`, `p50`, `p95`, `p99` over the window (None without runs) and `series`: one
        point per bucket, oldest first, with `at` (the bucket's start, RFC 3339), `count`
        and the three quantiles.
    """
    whole = _whole_days(since, until)
    if (
        whole is not None
        and until - since > timedelta(seconds=LONG_RANGE)
        and step_seconds % DAY_SECONDS == 0
    ):
        return _latency_by_days(connection, parent, since, until, region, step_seconds, *whole)
    rows = connection.execute(
        f"""SELECT {_BUCKET} AS bucket, grouping(bucket) AS overall, {_BUCKET_AT},
                   count(*), {_QUANTILES}
            FROM {source(connection, since, until)} WHERE {_SCOPE}
            GROUP BY GROUPING SETS ((), (bucket))
            ORDER BY overall DESC, bucket""",
        {**_scope(parent, since, until, region), "step": step_seconds * 1_000_000},
    ).fetchall()
    return {**_series_of(rows), "quantiles": "exact"}


def _latency_by_days(
    connection: Connection,
    parent: str,
    since: datetime,
    until: datetime,
    region: str | None,
    step_seconds: int,
    first: int,
    last: int,
) -> dict[str, Any]:
    """`latency` over a long range from histograms: the per-day tier's for the whole days,
    raw rows binned the same way for the partial days around them; each bucket's and the
    range's quantiles are read off the merged counts (`core/sketch.py`, within ALPHA)."""
    tier, parameters = days.relation(connection, first, last, parent)
    parts = [
        f"""SELECT day * {DAY_SECONDS} // $step * $step AS bucket, unnest(bins) AS bin,
                   unnest(counts) AS n
            FROM {tier} WHERE $region::VARCHAR IS NULL OR region = $region"""
    ]
    for index, (low, high) in enumerate(_edges(since, until, first, last)):
        parts.append(
            f"""SELECT epoch(started_at)::BIGINT // $step * $step AS bucket, {BIN_SQL} AS bin,
                       count(*) AS n
                FROM {source(connection, low, high)}
                WHERE parent = $parent AND started_at >= $lo{index} AND started_at < $hi{index}
                  AND ($region::VARCHAR IS NULL OR region = $region)
                GROUP BY bucket, bin"""
        )
        parameters.update(_edge_parameters(parent, index, low, high))
    # Key -1 is the whole range; the others are bucket starts (s).
    counts = f"""(SELECT coalesce(bucket, -1) AS k, bin, sum(n)::BIGINT AS n
                 FROM ({" UNION ALL ".join(parts)})
                 GROUP BY GROUPING SETS ((bucket, bin), (bin)))"""
    rows = connection.execute(
        f"""SELECT k, total, list_transform(q, lambda v: round(v, 3))
            FROM ({quantiles_sql(counts, "k")}) ORDER BY k""",
        {**parameters, "region": region, "step": step_seconds},
    ).fetchall()
    summary: dict[str, Any] = {"count": 0, **_quantiles(None)}
    series = []
    for key, total, quantiles in rows:
        if key == -1:
            summary = {"count": int(total), **_quantiles(quantiles)}
        else:
            at = datetime.fromtimestamp(key, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            series.append({"at": at, "count": int(total), **_quantiles(quantiles)})
    return {**summary, "series": series, "quantiles": "histogram", "quantile_error": ALPHA}


def latency_by_region(
    connection: Connection,
    parent: str,
    since: datetime,
    until: datetime,
    region: str | None,
    step_seconds: int,
) -> dict[str, dict[str, Any]]:
    """`latency` for every region with runs in the window, in one pass over the rows.

    Args:
        connection: a state file connection or cursor.
        parent: the canary key (`namespace/name`).
        since: first start time included.
        until: start times before this are included.
        region: only this region, or every region when None.
        step_seconds: the bucket width.

    Returns:
        By region name: what `latency` returns for that region alone.
    """
    rows = connection.execute(
        f"""SELECT region, {_BUCKET} AS bucket, grouping(bucket) AS overall, {_BUCKET_AT},
                   count(*), {_QUANTILES}
            FROM {source(connection, since, until)} WHERE {_SCOPE}
            GROUP BY GROUPING SETS ((region), (region, bucket))
            ORDER BY region, overall DESC, bucket""",
        {**_scope(parent, since, until, region), "step": step_seconds * 1_000_000},
    ).fetchall()
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for name, *rest in rows:
        grouped.setdefault(name, []).append(tuple(rest))
    return {name: _series_of(region_rows) for name, region_rows in grouped.items()}


def _series_of(rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """Shape (bucket, overall flag, bucket start, count, quantiles) rows, overall first."""
    summary: dict[str, Any] = {"count": 0, **_quantiles(None)}
    series = []
    for _, overall, at, count, quantiles in rows:
        if overall:
            summary = {"count": count, **_quantiles(quantiles)}
        else:
            series.append({"at": at, "count": count, **_quantiles(quantiles)})
    return {**summary, "series": series}


def region_summaries(
    connection: Connection, parent: str, since: datetime, until: datetime, region: str | None
) -> dict[str, dict[str, Any]]:
    """Per region of a canary over a window: runs, uptime, p50, p95 and the latest run.

    `last_status` and `last_run_at` describe the single most recent run in the window. (The
    region's status now is `core/status.py`'s: see `Reports.statuses`.)

    Args:
        connection: a state file connection or cursor.
        parent: the canary key (`namespace/name`).
        since: first start time included.
        until: start times before this are included.
        region: only this region, or every region when None.

    Returns:
        By region name: total, passed (with degraded and retried, as `uptime` counts them),
        uptime, p50, p95, last_status, last_run_at.
    """
    rows = connection.execute(
        f"""SELECT region, {SQL_RUNS}, {SQL_PASSES}, {SQL_DEGRADED}, {SQL_RETRIED}, {_QUANTILES},
                   arg_max(status, started_at),
                   strftime(make_timestamp(max(epoch_us(started_at))), {_RFC3339})
            FROM {source(connection, since, until)} WHERE {_SCOPE} GROUP BY region""",
        _scope(parent, since, until, region),
    ).fetchall()
    summaries = {}
    for name, total, passed, degraded, retried, quantiles, last_status, last_run_at in rows:
        p50, p95, _ = quantiles
        summaries[name] = {
            "total": total,
            "passed": passed,
            "degraded": degraded,
            "retried": retried,
            "uptime": _ratio(passed, total),
            "p50": p50,
            "p95": p95,
            "last_status": last_status,
            "last_run_at": last_run_at,
        }
    return summaries


def revisions(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """The most recently applied revisions, newest first.

    Args:
        connection: a state file connection or cursor.
        limit: at most this many.

    Returns:
        One dict per revision: serial, sha, ref, author, message, dirty, applied_at
        (RFC 3339), added, changed, destroyed.
    """
    rows = connection.execute(
        f"""SELECT serial, sha, ref, author, message, dirty,
                   strftime(make_timestamp(epoch_us(applied_at)), {_RFC3339}),
                   added, changed, destroyed
            FROM revisions ORDER BY serial DESC LIMIT ?""",
        [limit],
    ).fetchall()
    keys = ("serial", "sha", "ref", "author", "message", "dirty", "applied_at", "added",
            "changed", "destroyed")  # fmt: skip
    return [dict(zip(keys, row, strict=True)) for row in rows]


class Reports:
    """The reports above, each run on a reader thread of the server's state handle."""

    def __init__(self, state: StateHandle) -> None:
        self._state = state

    async def statuses(
        self, resources: Iterable[Resource], now: datetime, only: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every canary's status (core/status.py) as JSON documents, on a reader thread.

        Args:
            resources: the served revision's resources.
            now: the time the statuses are for.
            only: just this canary key's.

        Returns:
            By canary key, `core.status.document` of each canary of the revision (unknown
            for those that never run).
        """
        everything = list(resources)
        keys = [r.name for r in everything if r.kind == "Canary" and only in (None, r.name)]
        mine = [
            r for r in everything
            if only is None or r.name == only or (r.kind == "DerivedCanary" and r.parent == only)
        ]  # fmt: skip
        states = await self._state.read(lambda c: canary_statuses(c, mine, now))
        return {key: document(states.get(key)) for key in keys}

    async def recent_results(
        self, parent: str, since: datetime, until: datetime, region: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """`recent_results` on a reader thread."""
        return await self._state.read(
            lambda c: recent_results(c, parent, since, until, region, limit)
        )

    async def uptime(
        self, parent: str, since: datetime, until: datetime, region: str | None
    ) -> dict[str, Any]:
        """`uptime` on a reader thread."""
        return await self._state.read(lambda c: uptime(c, parent, since, until, region))

    async def latency(
        self, parent: str, since: datetime, until: datetime, region: str | None, step: int
    ) -> dict[str, Any]:
        """`latency` on a reader thread."""
        return await self._state.read(lambda c: latency(c, parent, since, until, region, step))

    async def latency_by_region(
        self, parent: str, since: datetime, until: datetime, region: str | None, step: int
    ) -> dict[str, dict[str, Any]]:
        """`latency_by_region` on a reader thread."""
        return await self._state.read(
            lambda c: latency_by_region(c, parent, since, until, region, step)
        )

    async def region_summaries(
        self, parent: str, since: datetime, until: datetime, region: str | None
    ) -> dict[str, dict[str, Any]]:
        """`region_summaries` on a reader thread."""
        return await self._state.read(lambda c: region_summaries(c, parent, since, until, region))

    async def revisions(self, limit: int) -> list[dict[str, Any]]:
        """`revisions` on a reader thread."""
        return await self._state.read(lambda c: revisions(c, limit))
