"""Incidents in the state file: region health, incidents, timelines, and recent runs to judge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from reconciler.core.incidents import (
    Action,
    AgentHealth,
    CheckRow,
    OpenIncident,
    RegionHealth,
    RegionStatus,
    TimelineEntry,
    Verdict,
)
from reconciler.store.db import Connection, transaction

# Column types of the tables written in bulk (see `_SCHEMA` in store/db.py).
_REGION_TYPES = ("VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "TIMESTAMPTZ")
_AGENT_TYPES = ("VARCHAR",) * 4 + ("INTEGER",) * 2 + ("TIMESTAMPTZ",) * 2
_TIMELINE_TYPES = ("BIGINT", "TIMESTAMPTZ", "VARCHAR", "VARCHAR")


@dataclass(frozen=True)
class IncidentWrite:
    """What one evaluation of a target stores.

    Attributes:
        canary: the canary key.
        regions: the target's new region states (replacing the stored ones), or None when
            they did not change.
        action: `open`, `update`, `resolve` or `none`.
        incident: the open incident that `update` and `resolve` apply to.
        timeline: entries for the new or open incident.
        at: the evaluation time (opened_at / resolved_at).
    """

    canary: str
    regions: Mapping[str, RegionHealth] | None
    action: Action
    incident: OpenIncident | None
    timeline: Sequence[TimelineEntry]
    at: datetime


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


def _text(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def load_state(
    connection: Connection,
) -> tuple[dict[str, dict[str, RegionHealth]], dict[str, OpenIncident]]:
    """Every stored region state and every open incident.

    Args:
        connection: a state file connection or cursor.

    Returns:
        Region states by canary key and region, and open incidents by canary key.
    """
    agents: dict[tuple[str, str], dict[str, AgentHealth]] = {}
    for (
        canary,
        region,
        agent,
        verdict,
        fails,
        passes,
        changed_at,
        last_run_at,
    ) in connection.execute(
        """SELECT canary, region, agent, verdict, fails, passes, changed_at, last_run_at
               FROM incident_agents"""
    ).fetchall():
        agents.setdefault((canary, region), {})[agent] = AgentHealth(
            cast(Verdict | None, verdict), fails, passes, _utc(changed_at), _utc(last_run_at)
        )
    health: dict[str, dict[str, RegionHealth]] = {}
    for canary, region, status, last_known, changed_at in connection.execute(
        "SELECT canary, region, status, last_known, changed_at FROM incident_regions"
    ).fetchall():
        health.setdefault(canary, {})[region] = RegionHealth(
            cast(RegionStatus, status),
            cast(Verdict | None, last_known),
            _utc(changed_at),
            agents.get((canary, region), {}),
        )
    incidents = {
        canary: OpenIncident(int(id_), opened_at.astimezone(UTC))
        for id_, canary, opened_at in connection.execute(
            "SELECT id, canary, opened_at FROM incidents WHERE state = 'open'"
        ).fetchall()
    }
    return health, incidents


def open_incident_ids(connection: Connection) -> set[int]:
    """The ids of the incidents open now."""
    rows = connection.execute("SELECT id FROM incidents WHERE state = 'open'").fetchall()
    return {int(incident) for (incident,) in rows}


def changed_canaries(connection: Connection, since: datetime) -> set[str]:
    """The derived canaries with results received since a time.

    Args:
        connection: a state file connection or cursor.
        since: the earliest `received_at` looked at.

    Returns:
        Derived canary ids.
    """
    rows = connection.execute(
        "SELECT DISTINCT canary FROM results WHERE received_at >= ?", [since]
    ).fetchall()
    return {canary for (canary,) in rows}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def recent_rows(
    connection: Connection, cursors: Mapping[str, datetime], cap: int
) -> dict[str, tuple[list[CheckRow], bool]]:
    """Each derived canary's result rows that started at or after its cursor, oldest first;
    runs in a maintenance window are left out (they neither open nor resolve an incident).

    Args:
        connection: a state file connection or cursor.
        cursors: the derived canaries to load, each with the earliest start wanted.
        cap: at most this many rows per derived canary.

    Returns:
        By derived canary id: its rows, and whether more rows were left out by the cap.
    """
    if not cursors:
        return {}
    rows = connection.execute(
        """WITH cursors AS (
               SELECT unnest($canaries::VARCHAR[]) AS canary,
                      unnest($after::TIMESTAMPTZ[]) AS after
           )
           SELECT r.canary, epoch_us(r.started_at), r.check_name, r.status
           FROM results r JOIN cursors c ON r.canary = c.canary AND r.started_at >= c.after
           WHERE r.started_at >= $earliest AND NOT coalesce(r.maintenance, false)
           QUALIFY row_number() OVER (PARTITION BY r.canary ORDER BY r.started_at) <= $cap + 1
           ORDER BY r.canary, r.started_at""",
        {
            "canaries": list(cursors),
            "after": list(cursors.values()),
            "earliest": min(cursors.values()),
            "cap": cap,
        },
    ).fetchall()
    loaded: dict[str, list[CheckRow]] = {canary: [] for canary in cursors}
    # Times come as microseconds: DuckDB builds an aware datetime four times slower, and every
    # stored row is read here once while results stream in.
    for canary, started_us, check, status in rows:
        loaded[canary].append(CheckRow(_EPOCH + timedelta(microseconds=started_us), check, status))
    return {canary: (found[:cap], len(found) > cap) for canary, found in loaded.items()}


def _replace_regions(connection: Connection, writes: Sequence[IncidentWrite]) -> None:
    replaced = [w for w in writes if w.regions is not None]
    if not replaced:
        return
    names = [w.canary for w in replaced]
    for table in ("incident_regions", "incident_agents"):
        connection.execute(
            f"DELETE FROM {table} WHERE canary IN (SELECT unnest($names::VARCHAR[]))",
            {"names": names},
        )
    regions: list[tuple[Any, ...]] = []
    agents: list[tuple[Any, ...]] = []
    for write in replaced:
        for region, state in (write.regions or {}).items():
            regions.append((write.canary, region, state.status, state.last_known, state.changed_at))
            for agent, health in state.agents.items():
                # AgentHealth fields: verdict, fails, passes, changed_at, last_run_at
                agents.append((write.canary, region, agent, *health))
    _insert(connection, "incident_regions", regions, _REGION_TYPES)
    _insert(connection, "incident_agents", agents, _AGENT_TYPES)


def _insert(
    connection: Connection, table: str, rows: Sequence[tuple[Any, ...]], types: Sequence[str]
) -> None:
    """Insert rows in one statement: one list parameter per column, unnested together."""
    if not rows:
        return
    columns = ", ".join(f"unnest($c{i}::{kind}[])" for i, kind in enumerate(types))
    parameters = {f"c{i}": [row[i] for row in rows] for i in range(len(types))}
    connection.execute(f"INSERT INTO {table} SELECT {columns}", parameters)


def _open(connection: Connection, canary: str, at: datetime) -> int:
    """The id of the canary's open incident, opening one when there is none."""
    found = connection.execute(
        "SELECT id FROM incidents WHERE canary = ? AND state = 'open'", [canary]
    ).fetchone()
    if found is not None:
        return int(found[0])
    next_id = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM incidents").fetchone()
    assert next_id is not None
    connection.execute(
        "INSERT INTO incidents VALUES (?, ?, ?, NULL, 'open')", [next_id[0], canary, at]
    )
    return int(next_id[0])


def save(connection: Connection, writes: Sequence[IncidentWrite]) -> dict[str, int]:
    """Store evaluations in one transaction: region states, incidents and timelines.

    At most one incident per canary is open: opening when one is already open adds to the
    open one instead.

    Args:
        connection: the writing connection.
        writes: one per target whose state or incident changed.

    Returns:
        The id of each incident opened or added to, by canary key.
    """
    ids: dict[str, int] = {}
    with transaction(connection):
        _replace_regions(connection, writes)
        timeline: list[tuple[Any, ...]] = []
        for write in writes:
            if write.action == "open":
                ids[write.canary] = _open(connection, write.canary, write.at)
            elif write.incident is not None and write.action in ("update", "resolve"):
                ids[write.canary] = write.incident.id
            else:
                continue
            if write.action == "resolve":
                connection.execute(
                    """UPDATE incidents SET state = 'resolved', resolved_at = ?
                       WHERE id = ? AND state = 'open'""",
                    [write.at, ids[write.canary]],
                )
            timeline += [(ids[write.canary], e.at, e.region, e.change) for e in write.timeline]
        _insert(connection, "incident_timeline", timeline, _TIMELINE_TYPES)
    return ids


def list_incidents(
    connection: Connection, canary: str | None, state: str | None, limit: int
) -> list[dict[str, Any]]:
    """Open incidents first, then the most recently opened, each with its timeline.

    Args:
        connection: a state file connection or cursor.
        canary: only this canary's incidents (its key), or every canary's when None.
        state: only `open` or `resolved` incidents, or both when None.
        limit: at most this many incidents.

    Returns:
        One dict per incident: id, canary, region (always None: an incident covers every
        region), state, opened_at, resolved_at (RFC 3339), regions_down (regions whose
        latest recorded timeline entry is `down`) and timeline (at, region, change; oldest
        first, entries of the same time in the order they were recorded).
    """
    rows = connection.execute(
        """SELECT id, canary, state, opened_at, resolved_at FROM incidents
           WHERE ($canary::VARCHAR IS NULL OR canary = $canary)
             AND ($state::VARCHAR IS NULL OR state = $state)
           ORDER BY state = 'open' DESC, opened_at DESC, id DESC
           LIMIT $limit""",
        {"canary": canary, "state": state, "limit": limit},
    ).fetchall()
    timelines: dict[int, list[dict[str, Any]]] = {int(row[0]): [] for row in rows}
    if timelines:
        # rowid is the order the entries were stored, which is the order they were decided:
        # it breaks ties of time, and says which entry of a region is its latest even where
        # an older state file holds a change dated before the one decided ahead of it.
        for incident, at, region, change, stored in connection.execute(
            """SELECT incident, changed_at, region, change, rowid FROM incident_timeline
               WHERE incident IN (SELECT unnest($ids::BIGINT[]))
               ORDER BY incident, changed_at, region, rowid""",
            {"ids": list(timelines)},
        ).fetchall():
            entry = {"at": _text(at), "region": region, "change": change, "stored": stored}
            timelines[int(incident)].append(entry)
    documents = []
    for id_, key, state_, opened_at, resolved_at in rows:
        timeline = timelines[int(id_)]
        latest = {e["region"]: e["change"] for e in sorted(timeline, key=lambda e: e["stored"])}
        for entry in timeline:
            del entry["stored"]
        documents.append(
            {
                "id": int(id_),
                "canary": key,
                "region": None,
                "state": state_,
                "opened_at": _text(opened_at),
                "resolved_at": _text(resolved_at),
                "regions_down": sorted(r for r, change in latest.items() if change == "down"),
                "timeline": timeline,
            }
        )
    return documents
