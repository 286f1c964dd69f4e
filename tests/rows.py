"""Result rows written straight into a state file by tests."""

# The columns of the first release's `results` table, in order; the columns added since have
# defaults, so `INSERT INTO results ({RESULT_COLUMNS_V1}) VALUES (...)` keeps working.
RESULT_COLUMNS_V1 = (
    "agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status, "
    "code, message, phases, received_at"
)
