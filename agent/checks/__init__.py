"""Check runner of the probe agent: every check type run under its timeout."""

from __future__ import annotations

from agent.checks.outcome import CheckOutcome, result_row
from agent.checks.pool import ClientPool
from agent.checks.runner import run_check

__all__ = ["CheckOutcome", "ClientPool", "result_row", "run_check"]
