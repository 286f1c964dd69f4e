"""How each result status counts: up or down, and which runs uptime leaves out.

One place for the rule every figure follows (the site, the read API, SLA months, incidents,
probe series): `pass` and `degraded` (correct but slower than the check's degraded threshold)
are up; `fail` and `error` are down. Among the up runs, two are counted apart as well:
degraded ones, and retried ones (up only after the check's retries, `retries > 0`). A run
marked `maintenance` (it started inside a maintenance window) still ran and is stored and
shown, but is in no uptime figure: neither among the runs nor among the passes. Latency
figures keep every run.
"""

from __future__ import annotations

UP_STATUSES = frozenset({"pass", "degraded"})

# SQL over a relation with `status` and `maintenance` columns (`results`, `results_all`).
SQL_UP = "status IN ('pass', 'degraded')"
SQL_DOWN = "status NOT IN ('pass', 'degraded')"
SQL_COUNTED = "NOT coalesce(maintenance, false)"
SQL_RUNS = f"count(*) FILTER (WHERE {SQL_COUNTED})"
SQL_PASSES = f"count(*) FILTER (WHERE {SQL_UP} AND {SQL_COUNTED})"
# Up runs counted apart: slow ones, and those that passed only after retrying.
SQL_DEGRADED = f"count(*) FILTER (WHERE status = 'degraded' AND {SQL_COUNTED})"
SQL_RETRIED = f"count(*) FILTER (WHERE {SQL_UP} AND coalesce(retries, 0) > 0 AND {SQL_COUNTED})"


def is_up(status: str) -> bool:
    """Whether a run with this status counts as up."""
    return status in UP_STATUSES
