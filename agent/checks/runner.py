"""The dispatcher: runs one check of any type under its timeout and never raises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeGuard

import httpx

from agent.checks.browser_check import check_browser
from agent.checks.dns_check import check_dns
from agent.checks.grpc_check import check_grpc
from agent.checks.http_check import HttpProgress, check_http
from agent.checks.icmp_check import check_icmp
from agent.checks.multihttp_check import check_multihttp
from agent.checks.outcome import CheckOutcome, RunStatus, Verdict, clip
from agent.checks.pool import ClientPool
from agent.checks.tcp_check import check_tcp
from agent.checks.tls_check import check_tls
from schemas.checks import DEFAULT_TIMEOUT_SECONDS
from schemas.wire import MAX_RETRIES

Clock = Callable[[], datetime]
CheckFunction = Callable[[Mapping[str, Any], ClientPool, Clock], Awaitable[Verdict]]


async def _tcp(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_tcp(check)


async def _dns(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_dns(check)


async def _tls(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_tls(check, now)


async def _icmp(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_icmp(check)


async def _grpc(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_grpc(check, clients)


async def _browser(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    return await check_browser(check, clients)


CHECKS: dict[str, CheckFunction] = {
    "http": check_http,
    "tcp": _tcp,
    "dns": _dns,
    "tls": _tls,
    "icmp": _icmp,
    "multihttp": check_multihttp,
    "grpc": _grpc,
    "browser": _browser,
}
# Seconds of grace before the outer timeout cancels a check that keeps its own deadline: an
# icmp check reports the packets it lost at its deadline instead of just "timed out"; a
# browser check takes a screenshot and stops a hung browser after its deadline.
SELF_TIMED = {"http": 1.0, "dns": 1.0, "icmp": 1.0, "multihttp": 1.0, "grpc": 1.0, "browser": 20.0}


def _timeout_ms(check: Mapping[str, Any]) -> int:
    value = check.get("timeout_ms")
    if value is None:
        return round(DEFAULT_TIMEOUT_SECONDS * 1000)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"timeout_ms must be a positive integer, got {value!r}")
    return value


def _utc(now: Clock) -> datetime:
    try:
        moment = now()
    except Exception:  # a broken clock must not break the check; fall back to the system's
        moment = datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def describe_error(error: BaseException) -> str:
    """An exception as `Type: text` (just the type when it has no text)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _stopped(what: str, timed_out: bool, progress: HttpProgress | None) -> Verdict:
    """The error verdict of a run that ended in an exception, with what an http run had
    received by then (its status, phases and stage)."""
    if progress is None:
        return Verdict("error", what)
    return Verdict("error", progress.describe(what, timed_out), progress.code, progress.phases())


async def _verdict(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> Verdict:
    timeout_ms = None
    progress = None
    try:
        timeout_ms = _timeout_ms(check)
        check_type = check.get("type")
        run = CHECKS.get(check_type) if isinstance(check_type, str) else None
        if run is None:
            return Verdict("error", f"unknown check type {check_type!r}")
        if check_type == "http":
            progress = HttpProgress()
            run = partial(check_http, progress=progress)
        # HTTP and DNS checks enforce their timeout themselves, so the outer timeout is only a
        # backstop for them: behind a proxy, HTTP checks use httpx's pooled transport, where
        # cancelling a request that waits for a connection can leave the connection stuck
        # (encode/httpcore#1093). The agent's own probe transport is safe to cancel.
        backstop = SELF_TIMED.get(str(check_type), 0.0)
        async with asyncio.timeout(timeout_ms / 1000 + backstop):
            return await run(check, clients, now)
    except (TimeoutError, httpx.TimeoutException) as error:
        if timeout_ms is None:
            return Verdict("error", describe_error(error))
        return _stopped(f"timed out after {timeout_ms}ms", True, progress)
    except Exception as error:  # a check never raises: any failure is reported as "error"
        return _stopped(describe_error(error), False, progress)


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Retries:
    """A check's retries as served: seconds, and 0 for no timeout."""

    count: int = 0
    interval: float = 0.0
    delay: float = 0.0
    timeout: float = 0.0


_MILLIS = ("interval_ms", "delay_ms", "timeout_ms")


def _retries(check: Mapping[str, Any]) -> _Retries:
    """The check's retries as served (`{count, interval_ms, delay_ms, timeout_ms}`)."""
    retries = check.get("retries")
    if retries is None:
        return _Retries()
    if isinstance(retries, Mapping):
        count, millis = retries.get("count"), [retries.get(name, 0) for name in _MILLIS]
        if (
            _whole(count)
            and 0 <= count <= MAX_RETRIES
            and all(_whole(ms) and ms >= 0 for ms in millis)
        ):
            return _Retries(count, *(ms / 1000 for ms in millis))
    raise ValueError(
        f"retries must be {{count: 0-{MAX_RETRIES}, interval_ms, delay_ms, timeout_ms: >= 0}}, "
        f"got {retries!r}"
    )


def _judged(
    check: Mapping[str, Any], verdict: Verdict, duration_ms: float
) -> tuple[RunStatus, str | None]:
    """The run's status and message: a passing verdict slower than `degradedThresholdMillis`
    is `degraded`, with why added to its message.

    Slowness is measured as `thresholdMillis` measures it: an icmp check's average round
    trip, every other check's run time.
    """
    threshold = check.get("degradedThresholdMillis")
    if verdict.status != "pass" or not _whole(threshold):
        return verdict.status, verdict.message
    measured = duration_ms
    rtt = (verdict.phases or {}).get("rtt_avg_ms")
    if check.get("type") == "icmp" and isinstance(rtt, int | float):
        measured = float(rtt)
    if measured <= threshold:
        return verdict.status, verdict.message
    slow = f"took {measured:.1f}ms, over degradedThresholdMillis {threshold}"
    return "degraded", slow if verdict.message is None else f"{verdict.message} ({slow})"


async def run_check(check: Mapping[str, Any], clients: ClientPool, now: Clock) -> CheckOutcome:
    """Run one check as served to the agent, with its retries; never raises (except on
    cancellation).

    After waiting `retries.delay_ms`, an attempt that fails or errors is tried again
    `retries.interval_ms` later, up to `retries.count` times and, with a `timeout_ms`, only
    while that long has not passed since the first attempt began; the first pass ends the run.
    The outcome is the last attempt's (status, duration, code, message, phases) with the
    number of retries it took, and starts at the run's scheduled start (which groups the
    checks of a run). A pass slower than `degradedThresholdMillis` is `degraded`.

    Args:
        check: The check: `name`, `type` (http, tcp, dns, tls, icmp, multihttp, grpc or browser),
            `timeout_ms`, optional `retries` (`{count, interval_ms, delay_ms, timeout_ms}`) and
            `degradedThresholdMillis`, and the fields of its type.
        clients: The shared HTTP clients.
        now: The clock for `started_at` and certificate days left (UTC, aware).

    Returns:
        The outcome: "pass"; "degraded" (passed, but slow); "fail" when the target answered
        but a condition failed; or "error" when the check could not run (an exception, as
        `Type: text`, or "timed out after Nms").
    """
    started_at = _utc(now)
    try:
        retries = _retries(check)
    except ValueError as error:
        return CheckOutcome(started_at, 0.0, "error", message=clip(describe_error(error)))
    # Only this check's task waits: the scheduler runs every check in a task of its own.
    await asyncio.sleep(retries.delay)
    first = time.perf_counter()
    attempt = 0
    while True:
        start = time.perf_counter()
        verdict = await _verdict(check, clients, now)
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        if verdict.status == "pass" or attempt >= retries.count:
            break
        wait = retries.interval
        if retries.timeout:
            # canary-checker's rule: no attempt starts once the timeout has passed, and the
            # wait before the last one shrinks to what is left of it.
            left = retries.timeout - (time.perf_counter() - first)
            if left <= 0:
                break
            wait = min(wait, left)
        attempt += 1
        await asyncio.sleep(wait)
    status, message = _judged(check, verdict, duration_ms)
    return CheckOutcome(
        started_at=started_at,
        duration_ms=duration_ms,
        status=status,
        code=verdict.code,
        message=clip(message),
        phases=verdict.phases,
        screenshot=verdict.screenshot,
        retries=attempt,
    )
