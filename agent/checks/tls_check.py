"""The TLS check: a handshake whose certificate must not expire within `maxSSLExpiry` days."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from agent.checks import certs
from agent.checks.endpoint import connect_error, split_endpoint
from agent.checks.fields import integer, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold

DEFAULT_MAX_EXPIRY_DAYS = 7


class HandshakeError(Exception):
    """The TLS handshake did not complete or gave no certificate."""


@lru_cache(maxsize=1)
def _context() -> ssl.SSLContext:
    """A default context that accepts any certificate, so expiry is read even when self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _handshake(writer: asyncio.StreamWriter, server_name: str, where: str) -> bytes:
    try:
        await writer.start_tls(_context(), server_hostname=server_name)
    except (OSError, EOFError, asyncio.IncompleteReadError) as error:
        reason = str(error) or type(error).__name__
        raise HandshakeError(f"TLS handshake with {where} failed: {reason}") from error
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise HandshakeError(f"{where} sent no certificate")
    return bytes(der)


async def check_tls(check: Mapping[str, Any], now: Callable[[], datetime]) -> Verdict:
    """Handshake with the check's `endpoint` and judge its certificate's expiry.

    Certificates are not verified: the check is about expiry, and self-signed ones count.

    Args:
        check: The check as served (endpoint, serverName, maxSSLExpiry, thresholdMillis).
        now: The clock, for days left.

    Returns:
        "pass"; "fail" when the certificate expires within `maxSSLExpiry` days, the check
        was too slow, or no TCP connection could be made.

    Raises:
        HandshakeError: the handshake failed or gave no certificate (so: "error").
    """
    endpoint = required_text(check, "endpoint")
    host, port = split_endpoint(endpoint)
    max_days = integer(check, "maxSSLExpiry")
    max_days = DEFAULT_MAX_EXPIRY_DAYS if max_days is None else max_days
    server_name = text(check, "serverName") or host
    limit = threshold(check)
    start = time.perf_counter()
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        return Verdict("fail", connect_error(endpoint, error))
    connected = time.perf_counter()
    try:
        der = await _handshake(writer, server_name, endpoint)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    done = time.perf_counter()
    expiry = certs.not_after(der)
    days = certs.days_left(expiry, now())
    described = certs.describe(expiry, days)
    failures = [] if days >= max_days else [f"{described}, fewer than maxSSLExpiry {max_days}"]
    failures += over_threshold((done - start) * 1000, limit)
    phases = {
        "connect_ms": round((connected - start) * 1000, 3),
        "tls_ms": round((done - connected) * 1000, 3),
        "total_ms": round((done - start) * 1000, 3),
        "cert_days_left": round(days, 3),
        "cert_not_after": expiry.timestamp(),
    }
    return judge(failures, described, phases=phases)
