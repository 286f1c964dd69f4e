"""Check runner of the probe agent: HTTP, TCP, DNS and TLS checks run under their timeouts."""

from __future__ import annotations

from agent.checks.outcome import CheckOutcome, result_row
from agent.checks.pool import ClientPool
from agent.checks.runner import run_check

__all__ = ["CheckOutcome", "ClientPool", "result_row", "run_check"]
