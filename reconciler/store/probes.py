"""The latest run of every derived canary's checks, for the per-check Prometheus series."""

from __future__ import annotations

from datetime import datetime

import orjson

from reconciler.core.outcomes import is_up
from reconciler.core.probe_metrics import ProbeRun
from reconciler.store.db import Connection


def latest_runs(connection: Connection, since: datetime) -> list[ProbeRun]:
    """Each (derived canary, check)'s latest run among those received since `since`.

    Results arrive in about the order they are received, so DuckDB's zone maps on
    `received_at` keep this to the newest rows.
    """
    rows = connection.execute(
        """SELECT parent, region, agent, check_name, check_type,
                  arg_max(status, started_at), arg_max(duration_ms, started_at),
                  epoch(max(started_at)), arg_max(code, started_at),
                  arg_max(phases, started_at)::VARCHAR
           FROM results WHERE received_at >= $since
           GROUP BY canary, parent, region, agent, check_name, check_type""",
        {"since": since},
    ).fetchall()
    return [
        ProbeRun(
            parent=row[0],
            region=row[1],
            agent=row[2],
            check=row[3],
            check_type=row[4],
            passed=is_up(row[5]),
            duration_ms=float(row[6]),
            started_at=float(row[7]),
            code=row[8],
            phases=orjson.loads(row[9]) if row[9] else None,
            degraded=row[5] == "degraded",
        )
        for row in rows
    ]
