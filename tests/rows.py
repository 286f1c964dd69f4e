"""Result rows written straight into a state file by tests, or handed to its writer."""

from __future__ import annotations

from datetime import datetime

from reconciler.core.ingest import AcceptedRows

# The columns of the first release's `results` table, in order; the columns added since have
# defaults, so `INSERT INTO results ({RESULT_COLUMNS_V1}) VALUES (...)` keeps working.
RESULT_COLUMNS_V1 = (
    "agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status, "
    "code, message, phases, received_at"
)


def accepted_rows(started_at: list[datetime]) -> AcceptedRows:
    """Passed runs of `web/shop@eu-1`'s http check `home`, one for each start, as the ingest
    writer receives them."""
    count = len(started_at)
    return AcceptedRows.of(
        canary=["web/shop@eu-1"] * count,
        parent=["web/shop"] * count,
        check_name=["home"] * count,
        check_type=["http"] * count,
        started_at=started_at,
        duration_ms=[10.0] * count,
        status=["pass"] * count,
        retries=[0] * count,
        code=[200] * count,
    )
