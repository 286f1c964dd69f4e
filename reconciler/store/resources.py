"""Desired-state resources in the state file: read them for planning, apply plans to them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from reconciler.core.plan import Plan, StateRef, Summary
from reconciler.core.resources import Resource, ResourceHeader
from reconciler.store.db import Connection, StateError, set_serial, state_ref, transaction


class StalePlan(StateError):
    """The state moved since the plan was made."""


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did: the new state, the summary and the canary runs it started."""

    state: StateRef
    summary: Summary
    canary_runs: tuple[str, ...]
    wrote: bool


def read_headers(connection: Connection) -> dict[str, ResourceHeader]:
    """Every current resource's header, by address."""
    rows = connection.execute(
        "SELECT address, fingerprint, run_fingerprint FROM resources"
    ).fetchall()
    return {address: ResourceHeader(fp, run_fp) for address, fp, run_fp in rows}


def fetch_resources(connection: Connection, addresses: Iterable[str]) -> dict[str, Resource]:
    """Full current resources for some addresses."""
    wanted = list(addresses)
    rows = connection.execute(
        """SELECT address, kind, name, spec, fingerprint, parent, agent, run_fingerprint
           FROM resources WHERE address IN (SELECT unnest(?::VARCHAR[]))""",
        [wanted],
    ).fetchall()
    return {
        row[0]: Resource(row[1], row[2], orjson.loads(row[3]), row[4], row[5], row[6], row[7])
        for row in rows
    }


def all_resources(connection: Connection) -> list[Resource]:
    """Every current resource."""
    rows = connection.execute(
        "SELECT kind, name, spec, fingerprint, parent, agent, run_fingerprint FROM resources"
    ).fetchall()
    return [Resource(r[0], r[1], orjson.loads(r[2]), *r[3:]) for r in rows]


def _check_fresh(plan: Plan, current: StateRef) -> None:
    if plan.state is None:
        if current.serial != 0:
            raise StalePlan(
                f"stale plan: it was made against an empty state, but the state is now at "
                f"serial {current.serial}; plan again"
            )
        return
    if plan.state.lineage != current.lineage:
        raise StalePlan(
            f"the plan belongs to another state file (lineage {plan.state.lineage}, "
            f"this file has {current.lineage})"
        )
    if plan.state.serial != current.serial:
        raise StalePlan(
            f"stale plan: it was made at serial {plan.state.serial}, the state is now at "
            f"serial {current.serial}; plan again"
        )


def _last_sha(connection: Connection) -> str | None:
    row = connection.execute("SELECT sha FROM revisions ORDER BY serial DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def _insert_resources(connection: Connection, plan: Plan, serial: int, now: datetime) -> None:
    written = [change for change in plan.changes if change.after is not None]
    if not written:
        return
    columns: dict[str, list[Any]] = {
        "address": [c.address for c in written],
        "kind": [c.kind for c in written],
        "name": [c.name for c in written],
        "parent": [c.parent for c in written],
        "agent": [c.agent for c in written],
        "spec": [orjson.dumps(c.after).decode() for c in written],
        "fingerprint": [c.fingerprint for c in written],
        "run_fingerprint": [c.run_fingerprint for c in written],
    }
    incoming = pa.table(columns)
    connection.register("incoming_resources", incoming)
    try:
        connection.execute(
            """INSERT INTO resources
               SELECT address, kind, name, parent, agent, spec::JSON, fingerprint,
                      run_fingerprint, ?, ?
               FROM incoming_resources""",
            [serial, now],
        )
    finally:
        connection.unregister("incoming_resources")


def _start_runs(connection: Connection, plan: Plan, serial: int, now: datetime) -> list[str]:
    started = []
    for run in plan.canary_runs:
        run_id = f"{run.route}#{serial}"
        steps = [
            {"weight": s.weight, "pause": s.pause, "weights": s.weights} for s in run.schedule.steps
        ]
        connection.execute(
            """UPDATE canary_runs SET state = 'superseded'
               WHERE route = ? AND state IN ('pending', 'progressing', 'paused')""",
            [run.route],
        )
        connection.execute(
            """INSERT INTO canary_runs
                   (id, route, run_fingerprint, state, reason, steps, created_serial, created_at)
               VALUES (?, ?, ?, 'pending', ?, ?::JSON, ?, ?)""",
            [
                run_id,
                run.route,
                run.run_fingerprint,
                run.reason,
                orjson.dumps(steps).decode(),
                serial,
                now,
            ],
        )
        started.append(run_id)
    return started


def apply_plan(connection: Connection, plan: Plan, now: datetime) -> ApplyResult:
    """Apply a plan in one transaction, refusing it when the state moved since it was made.

    A plan with no changes for the revision last applied writes nothing; one with no
    changes for a new revision only records the revision.

    Raises:
        StalePlan: the state's serial or lineage differs from the plan's.
    """
    with transaction(connection):
        current = state_ref(connection)
        _check_fresh(plan, current)
        summary = plan.summary
        sha = plan.revision.sha if plan.revision else None
        if not plan.changes and not plan.canary_runs and sha == _last_sha(connection):
            return ApplyResult(current, summary, (), wrote=False)
        serial = current.serial + 1
        replaced = [c.address for c in plan.changes if c.action in ("update", "delete")]
        if replaced:
            connection.execute(
                "DELETE FROM resources WHERE address IN (SELECT unnest(?::VARCHAR[]))",
                [replaced],
            )
        _insert_resources(connection, plan, serial, now)
        runs = _start_runs(connection, plan, serial, now)
        revision = plan.revision
        connection.execute(
            "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                serial,
                sha,
                revision.ref if revision else None,
                revision.author if revision else None,
                revision.committed_at if revision else None,
                revision.message if revision else None,
                revision.dirty if revision else False,
                now,
                summary.add,
                summary.change,
                summary.destroy,
                len(runs),
            ],
        )
        set_serial(connection, serial)
    return ApplyResult(StateRef(serial, current.lineage), summary, tuple(runs), wrote=True)


@dataclass(frozen=True)
class RevisionRow:
    """One applied revision."""

    serial: int
    sha: str | None
    author: str | None
    applied_at: datetime
    added: int
    changed: int
    destroyed: int
    message: str | None


def list_revisions(connection: Connection, limit: int = 20) -> list[RevisionRow]:
    """The most recently applied revisions, newest first."""
    rows = connection.execute(
        """SELECT serial, sha, author, epoch(applied_at), added, changed, destroyed, message
           FROM revisions ORDER BY serial DESC LIMIT ?""",
        [limit],
    ).fetchall()
    return [
        RevisionRow(row[0], row[1], row[2], datetime.fromtimestamp(row[3], UTC), *row[4:])
        for row in rows
    ]
