"""Every canary's status from the state file: recent runs and open incidents, decided by
`core.status` (the one definition the site and the read API share)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from reconciler.core.incidents import (
    RUN_WINDOW_SECONDS,
    CheckRow,
    Probe,
    Run,
    Target,
    group_runs,
    targets_of,
)
from reconciler.core.maintenance import windows_of, with_maintenance
from reconciler.core.resources import Resource
from reconciler.core.status import CanaryState, canary_status, lookback, paused_canaries
from reconciler.store.db import Connection

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows per run read at most, beyond the checks of a run: retries and late rows of a tick.
_SLACK_RUNS = 2
# How far back the last run of a derived canary with no recent run is looked for.
LAST_RUN_HORIZON = timedelta(hours=24)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _recent_rows(
    connection: Connection, since: Mapping[str, int], caps: Mapping[str, int], now: datetime
) -> dict[str, list[CheckRow]]:
    """Each derived canary's newest rows (at most its cap) started in [its since (µs), now],
    runs in a maintenance window left out."""
    if not since:
        return {}
    # Times cross the boundary as integers both ways: binding thousands of TIMESTAMPTZ
    # values, or fetching them, costs several times more than the query itself.
    starts = list(since.values())
    rows = connection.execute(
        """WITH wanted AS (
               SELECT unnest($canaries::VARCHAR[]) AS canary,
                      unnest($since::BIGINT[]) AS since,
                      unnest($caps::BIGINT[]) AS cap
           )
           SELECT r.canary, epoch_us(r.started_at), r.check_name, r.status, r.retries
           FROM results r JOIN wanted w
             ON r.canary = w.canary AND epoch_us(r.started_at) >= w.since
           WHERE r.started_at >= make_timestamptz($earliest)
             AND r.started_at <= make_timestamptz($now)
             AND NOT coalesce(r.maintenance, false)
           QUALIFY row_number() OVER (PARTITION BY r.canary ORDER BY r.started_at DESC)
                   <= any_value(w.cap) OVER (PARTITION BY r.canary)""",
        {
            "canaries": list(since),
            "since": starts,
            "caps": [caps[canary] for canary in since],
            "earliest": min(starts),
            "now": _micros(now),
        },
    ).fetchall()
    return _check_rows(rows)


def _newest_runs(
    connection: Connection, canaries: list[str], now: datetime
) -> dict[str, list[CheckRow]]:
    """The rows of each derived canary's newest run in the `LAST_RUN_HORIZON` before `now`
    (with some of the run before it), runs in a maintenance window left out: the last run
    of a canary that did not run lately."""
    if not canaries:
        return {}
    rows = connection.execute(
        """SELECT canary, epoch_us(started_at), check_name, status, retries
           FROM results
           WHERE canary IN (SELECT unnest($canaries::VARCHAR[]))
             AND started_at >= make_timestamptz($since) AND started_at <= make_timestamptz($now)
             AND NOT coalesce(maintenance, false)
           QUALIFY epoch_us(started_at)
                   >= max(epoch_us(started_at)) OVER (PARTITION BY canary) - $window""",
        {
            "canaries": canaries,
            "since": _micros(now - LAST_RUN_HORIZON),
            "now": _micros(now),
            "window": int(RUN_WINDOW_SECONDS * 1_000_000),
        },
    ).fetchall()
    return _check_rows(rows)


def _check_rows(rows: list[tuple[str, int, str, str, int | None]]) -> dict[str, list[CheckRow]]:
    """Rows of (derived canary, start in µs, check, status, retries) by derived canary."""
    loaded: dict[str, list[CheckRow]] = {}
    # Agents run on the same ticks: a few hundred distinct start times among tens of
    # thousands of rows, each made a datetime once (halves this loop, 0.02 s a site build at
    # 1,000 canaries in 5 regions).
    moments: dict[int, datetime] = {}
    for canary, micros, check, status, retries in rows:
        found = loaded.get(canary)
        if found is None:
            found = loaded[canary] = []
        moment = moments.get(micros)
        if moment is None:
            moment = moments[micros] = _EPOCH + timedelta(microseconds=micros)
        found.append(CheckRow(moment, check, status, retries or 0))
    return loaded


def open_incident_canaries(connection: Connection) -> set[str]:
    """The canary keys with an open incident."""
    rows = connection.execute("SELECT DISTINCT canary FROM incidents WHERE state = 'open'")
    return {str(canary) for (canary,) in rows.fetchall()}


def canary_statuses(
    connection: Connection,
    resources: Iterable[Resource],
    now: datetime,
    known: tuple[dict[str, Target], dict[str, Probe]] | None = None,
) -> dict[str, CanaryState]:
    """The status of every canary of a revision that runs on a schedule, at `now`.

    Args:
        connection: a state file connection or cursor.
        resources: the revision's resources (canaries and derived canaries are used).
        now: the time the statuses are for; later runs are ignored.
        known: `targets_of(resources)`, if the caller has it already.

    Returns:
        By canary key; a canary that never runs (`replicas: 0`, `@never`) is paused.
    """
    resources = list(resources)
    targets, probes = targets_of(resources) if known is None else known
    since: dict[str, int] = {}  # µs
    caps: dict[str, int] = {}
    now_us = _micros(now)
    reaches: dict[str, tuple[int, int]] = {}  # by canary: its lookback (µs), and in periods
    for derived, probe in probes.items():
        reach = reaches.get(probe.canary)
        if reach is None:
            target = targets[probe.canary]
            span = lookback(target)
            periods = int(span.total_seconds() // target.period) + _SLACK_RUNS
            reach = reaches[probe.canary] = (span // timedelta(microseconds=1), periods)
        since[derived] = now_us - reach[0]
        caps[derived] = max(probe.checks, 1) * reach[1]
    rows = _recent_rows(connection, since, caps, now)
    # A derived canary with no recent run still shows its last run (its status is unknown):
    # its newest rows are read once more, a day back at most (20-30 ms at 50 M rows, and
    # only while some derived canary is silent).
    rows.update(_newest_runs(connection, [key for key in since if key not in rows], now))
    runs: dict[str, dict[str, list[Run]]] = {}
    for derived, found in rows.items():
        probe = probes[derived]
        final, _ = group_runs(found, targets[probe.canary].period, probe.checks, now)
        runs.setdefault(probe.canary, {}).setdefault(probe.agent, []).extend(final)
    incidents = open_incident_canaries(connection)
    # Runs in a maintenance window decide nothing (left out above); a canary in an open
    # window reads "under maintenance" (core/maintenance.py).
    windows = windows_of(resources)
    states = {
        key: with_maintenance(
            canary_status(target, runs.get(key, {}), key in incidents, now), key, windows, now
        )
        for key, target in targets.items()
    }
    states.update(paused_canaries(resources, targets))
    return states
