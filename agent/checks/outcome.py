"""The result of one check run and the verdict a check type hands to the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.wire import Phases, ResultRow

Status = Literal["pass", "fail", "error"]
# A run's status: a check's verdict, or `degraded` for a pass slower than the check's
# `degradedThresholdMillis` (decided after the verdict, by the dispatcher).
RunStatus = Literal["pass", "degraded", "fail", "error"]
MAX_MESSAGE = 1024
WIRE_PHASES = (
    "connect_ms",
    "tls_ms",
    "first_byte_ms",
    "total_ms",
    "packets_sent",
    "packets_received",
    "packet_loss_percent",
    "rtt_min_ms",
    "rtt_avg_ms",
    "rtt_max_ms",
    "dns_ms",
    "dom_content_loaded_ms",
    "load_ms",
    "console_errors",
    "cert_not_after",
)


@dataclass(frozen=True)
class CheckOutcome:
    """One finished check run, ready to become a `ResultRow`."""

    started_at: datetime
    duration_ms: float
    status: RunStatus
    code: int | None = None
    message: str | None = None
    phases: dict[str, Any] | None = None
    # A browser check's PNG of the page when it did not pass; shipped apart from the row.
    screenshot: bytes | None = None
    # Attempts after the first (the check's `retries`); the rest is the last attempt's.
    retries: int = 0


@dataclass(frozen=True)
class Verdict:
    """What a check type decided; the dispatcher adds the start time and duration."""

    status: Status
    message: str | None = None
    code: int | None = None
    phases: dict[str, Any] | None = None
    screenshot: bytes | None = None


def clip(message: str | None) -> str | None:
    """Shorten a message to what a result row may carry.

    Args:
        message: The full message, or None.

    Returns:
        The message cut to `MAX_MESSAGE` characters (with an ellipsis), or None.
    """
    if message is None or len(message) <= MAX_MESSAGE:
        return message
    return message[: MAX_MESSAGE - 1] + "…"


def judge(
    failures: list[str],
    message: str | None = None,
    *,
    code: int | None = None,
    phases: dict[str, Any] | None = None,
) -> Verdict:
    """Turn the conditions that failed into a verdict.

    Args:
        failures: One sentence per failed condition; empty means the check passed.
        message: The message of a passing check.
        code: The HTTP status, if any.
        phases: Timing phases, if any.

    Returns:
        A "fail" verdict naming every failed condition, else a "pass" verdict.
    """
    if failures:
        return Verdict("fail", "; ".join(failures), code, phases)
    return Verdict("pass", message, code, phases)


def over_threshold(elapsed_ms: float, threshold: object) -> list[str]:
    """The failure of a `thresholdMillis` condition, if the check was too slow.

    Args:
        elapsed_ms: How long the check took.
        threshold: The check's `thresholdMillis` (None or absent means no limit).

    Returns:
        One failure sentence, or an empty list.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return []
    if elapsed_ms > threshold:
        return [f"took {elapsed_ms:.1f}ms, over thresholdMillis {threshold}"]
    return []


def result_row(canary: str, check: str, outcome: CheckOutcome) -> ResultRow:
    """The wire row of an outcome (phases the wire does not carry are left out).

    Args:
        canary: The derived canary id.
        check: The check name.
        outcome: The finished run.

    Returns:
        A `ResultRow` to post to the control plane.
    """
    phases = None
    if outcome.phases is not None:
        wire: dict[str, Any] = {
            k: v for k, v in outcome.phases.items() if k in WIRE_PHASES and v >= 0
        }
        steps = outcome.phases.get("steps_ms")
        if isinstance(steps, list) and steps:
            wire["steps_ms"] = [max(0.0, float(ms)) for ms in steps[:10]]
        phases = Phases(**wire) if wire else None
    return ResultRow(
        canary=canary,
        check=check,
        started_at=outcome.started_at,
        duration_ms=max(0.0, outcome.duration_ms),
        status=outcome.status,
        retries=outcome.retries,
        code=outcome.code if outcome.code is not None and 0 <= outcome.code <= 999 else None,
        message=clip(outcome.message),
        phases=phases,
    )
