"""The TCP check: a connect to host:port, within an optional latency limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from agent.checks.endpoint import connect_error, split_endpoint
from agent.checks.fields import required_text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError
from agent.expressions.celvars import tcp_context


async def check_tcp(check: Mapping[str, Any]) -> Verdict:
    """Open and close a TCP connection to the check's `endpoint`.

    Args:
        check: The check as served (endpoint, thresholdMillis).

    Returns:
        "pass" when connected in time, "fail" when refused, unreachable, unresolvable or
        slower than `thresholdMillis`.
    """
    endpoint = required_text(check, "endpoint")
    host, port = split_endpoint(endpoint)
    limit = threshold(check)
    start = time.perf_counter()
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        return Verdict("fail", connect_error(endpoint, error))
    connect_ms = (time.perf_counter() - start) * 1000
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    phases = {"connect_ms": round(connect_ms, 3), "total_ms": round(connect_ms, 3)}
    failures = over_threshold(connect_ms, limit)
    try:
        message = _expressions(check, failures, connect_ms)
    except CelError as error:
        return Verdict("error", str(error), phases=phases)
    return judge(failures, message, phases=phases)


def _expressions(check: Mapping[str, Any], failures: list[str], connect_ms: float) -> str | None:
    """Apply canary-checker's `test` and `display` to a connect (`elapsed`); return the message.

    Raises:
        CelError: an expression is broken.
    """
    elapsed = timedelta(milliseconds=connect_ms)
    return apply_rules(check, failures, tcp_context(elapsed), {"elapsed": elapsed})
