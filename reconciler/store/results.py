"""Check results in the state file: idempotent bulk inserts through one writer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import Connection


@dataclass(frozen=True)
class IngestBatch:
    """Accepted rows of one request, with the agent and region its token names."""

    batch: int
    agent: str
    region: str
    rows: AcceptedRows


_UTC_MICROS = pa.timestamp("us", tz="UTC")


def _table(batches: list[IngestBatch]) -> pa.Table:
    def column(name: str) -> list[object]:
        return [value for b in batches for value in getattr(b.rows, name)]

    return pa.table(
        {
            "batch": pa.array([b.batch for b in batches for _ in range(len(b.rows))], pa.int64()),
            "agent": [b.agent for b in batches for _ in range(len(b.rows))],
            "region": [b.region for b in batches for _ in range(len(b.rows))],
            "canary": column("canary"),
            "parent": column("parent"),
            "check_name": column("check_name"),
            "check_type": column("check_type"),
            "started_at": pa.array(column("started_at"), _UTC_MICROS),
            "duration_ms": pa.array(column("duration_ms"), pa.float64()),
            "status": column("status"),
            "retries": pa.array(column("retries"), pa.int16()),
            "maintenance": pa.array(column("maintenance"), pa.bool_()),
            "code": pa.array(column("code"), pa.int32()),
            "message": pa.array(column("message"), pa.string()),
            "phases": pa.array(column("phases"), pa.string()),
        }
    )


def insert_results(
    connection: Connection, batches: list[IngestBatch], now: datetime
) -> dict[int, int]:
    """Insert the rows of several requests at once, skipping rows already stored.

    A row's identity is (agent, derived canary, check, started_at): a re-sent row is a
    duplicate, whichever batch it comes in.

    Returns:
        The number of rows inserted for each batch id; the rest were duplicates.
    """
    total = sum(len(b.rows) for b in batches)
    if not total:
        return {b.batch: 0 for b in batches}
    incoming = _table(batches)
    # Constants, not subqueries: DuckDB skips the stored row groups outside them (zone maps).
    earliest = min(min(b.rows.started_at) for b in batches if len(b.rows))
    latest = max(max(b.rows.started_at) for b in batches if len(b.rows))
    connection.register("incoming_results", incoming)
    try:
        connection.execute("BEGIN TRANSACTION")
        connection.execute(
            """CREATE OR REPLACE TEMP TABLE fresh_results AS
               SELECT * EXCLUDE (seen) FROM (
                   SELECT *, row_number() OVER (
                       PARTITION BY agent, canary, check_name, started_at ORDER BY batch
                   ) AS seen
                   FROM incoming_results
               ) i
               WHERE seen = 1 AND NOT EXISTS (
                   SELECT 1 FROM results r
                   WHERE r.started_at BETWEEN ? AND ?
                     AND r.agent = i.agent AND r.canary = i.canary
                     AND r.check_name = i.check_name AND r.started_at = i.started_at
               )""",
            [earliest, latest],
        )
        connection.execute(
            """INSERT INTO results
               SELECT agent, region, canary, parent, check_name, check_type, started_at,
                      duration_ms, status, code, message, phases::JSON, ?, retries, maintenance
               FROM fresh_results""",
            [now],
        )
        counts = dict(
            connection.execute(
                "SELECT batch, count(*) FROM fresh_results GROUP BY batch"
            ).fetchall()
        )
        connection.execute("DROP TABLE fresh_results")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    finally:
        connection.unregister("incoming_results")
    return {b.batch: int(counts.get(b.batch, 0)) for b in batches}


def results_per_agent(connection: Connection, since: datetime) -> dict[str, int]:
    """How many rows each agent stored since a time."""
    rows = connection.execute(
        "SELECT agent, count(*) FROM results WHERE started_at >= ? GROUP BY agent", [since]
    ).fetchall()
    return {agent: int(count) for agent, count in rows}
