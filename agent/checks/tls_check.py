"""The TLS check: a handshake whose certificate must be valid now and for `maxSSLExpiry` days."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography import x509

from agent.checks import certs
from agent.checks.endpoint import connect_error, split_endpoint
from agent.checks.fields import integer, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold

DEFAULT_MAX_EXPIRY_DAYS = 7


class HandshakeError(Exception):
    """The TLS handshake did not complete or gave no certificate."""


@lru_cache(maxsize=1)
def _context() -> ssl.SSLContext:
    """A client context that accepts any certificate, so expiry is read even when self-signed.

    It loads no CA store: nothing is verified against it, and loading the system's takes
    about 20 ms.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _handshake(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, server_name: str, where: str
) -> bytes:
    try:
        await writer.start_tls(context, server_hostname=server_name)
    except (OSError, EOFError, asyncio.IncompleteReadError) as error:
        # asyncio reports a close during the handshake as a ConnectionResetError without text.
        reason = str(error) or f"{type(error).__name__} (the server closed the connection)"
        raise HandshakeError(f"TLS handshake with {where} failed: {reason}") from error
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise HandshakeError(f"{where} sent no certificate")
    return bytes(der)


def _hang_up(writer: asyncio.StreamWriter) -> None:
    """Close the connection without waiting for the server.

    `close` sends TLS's close_notify when the handshake completed, `abort` then drops the
    socket: a server that never answers the close must not hold the check, and after a
    failed handshake `wait_closed` never returns at all (the stream's protocol was swapped
    for TLS's, so it never hears of the connection's end).
    """
    writer.close()
    writer.transport.abort()


def _validity(der: bytes, now: datetime) -> tuple[datetime, list[str]]:
    """The certificate's expiry, and why it is not valid yet, if it is not.

    Raises:
        ValueError: the bytes are not a certificate.
    """
    cert = x509.load_der_x509_certificate(der)
    starts = cert.not_valid_before_utc
    if now >= starts:
        return cert.not_valid_after_utc, []
    when = starts.strftime("%Y-%m-%d %H:%M:%SZ")
    days = certs.days_left(starts, now)
    return cert.not_valid_after_utc, [
        f"certificate is not yet valid: valid from {when} ({days:.1f} days from now)"
    ]


async def check_tls(check: Mapping[str, Any], now: Callable[[], datetime]) -> Verdict:
    """Handshake with the check's `endpoint` and judge its certificate's validity period.

    Certificates are not verified: the check is about the dates, and self-signed ones count.
    The times are taken before the connection is closed, which is not waited for.

    Args:
        check: The check as served (endpoint, serverName, maxSSLExpiry, thresholdMillis).
        now: The clock, for days left.

    Returns:
        "pass"; "fail" when the certificate is not valid yet (its start date named),
        expires within `maxSSLExpiry` days, the check was too slow, or no TCP connection
        could be made.

    Raises:
        HandshakeError: the handshake failed or gave no certificate (so: "error").
    """
    endpoint = required_text(check, "endpoint")
    host, port = split_endpoint(endpoint)
    max_days = integer(check, "maxSSLExpiry")
    max_days = DEFAULT_MAX_EXPIRY_DAYS if max_days is None else max_days
    server_name = text(check, "serverName") or host
    limit = threshold(check)
    context = _context()
    start = time.perf_counter()
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        return Verdict("fail", connect_error(endpoint, error))
    connected = time.perf_counter()
    try:
        der = await _handshake(writer, context, server_name, endpoint)
        done = time.perf_counter()  # before the close: how the server hangs up is not timed
    finally:
        _hang_up(writer)
    moment = now()
    expiry, failures = _validity(der, moment)
    days = certs.days_left(expiry, moment)
    described = certs.describe(expiry, days)
    if days < max_days:
        failures.append(f"{described}, fewer than maxSSLExpiry {max_days}")
    failures += over_threshold((done - start) * 1000, limit)
    phases = {
        "connect_ms": round((connected - start) * 1000, 3),
        "tls_ms": round((done - connected) * 1000, 3),
        "total_ms": round((done - start) * 1000, 3),
        "cert_days_left": round(days, 3),
        "cert_not_after": expiry.timestamp(),
    }
    return judge(failures, described, phases=phases)
