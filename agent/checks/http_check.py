"""The HTTP check: status codes, latency, a CEL test, timing phases and certificate expiry."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from agent.checks import certs
from agent.checks.cel import CelError, evaluate, http_context
from agent.checks.fields import flag, integer, items, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.phases import PhaseRecorder
from agent.checks.pool import ClientPool

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class HttpSpec:
    """The fields of an HTTP check, validated before any request is made."""

    url: str
    method: str
    headers: list[tuple[str, str]]
    body: str | None
    codes: list[int]
    threshold_ms: int | None
    follow_redirects: bool
    expr: str | None
    timeout_s: float | None

    @classmethod
    def parse(cls, check: Mapping[str, Any]) -> HttpSpec:
        """Read the check's fields.

        Raises:
            ValueError: a field is missing or has the wrong type.
        """
        timeout_ms = integer(check, "timeout_ms")
        return cls(
            url=required_text(check, "url"),
            method=(text(check, "method") or "GET").upper(),
            headers=[_header(entry) for entry in items(check, "headers")],
            body=text(check, "body"),
            codes=[_code(code) for code in items(check, "responseCodes")],
            threshold_ms=threshold(check),
            follow_redirects=flag(check, "followRedirects", True),
            expr=_expression(check.get("test")),
            timeout_s=None if timeout_ms is None else timeout_ms / 1000,
        )


def _header(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ValueError(f"header {entry!r} is not {{name, value}}")
    return entry["name"], str(entry.get("value") or "")


def _code(code: Any) -> int:
    if isinstance(code, bool) or not isinstance(code, int):
        raise ValueError(f"response code {code!r} is not an integer")
    return code


def _expression(test: Any) -> str | None:
    if isinstance(test, Mapping):
        test = test.get("expr")
    if test is None or (isinstance(test, str) and not test.strip()):
        return None
    if not isinstance(test, str):
        raise ValueError(f"test expression must be a string, got {test!r}")
    return test


def _code_failures(code: int, accepted: list[int]) -> list[str]:
    if accepted and code not in accepted:
        wanted = ", ".join(str(c) for c in accepted)
        return [f"status code {code} is not one of the accepted codes [{wanted}]"]
    if not accepted and not 200 <= code < 300:
        return [f"status code {code} is not 2xx"]
    return []


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, up to MAX_BODY_BYTES (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _peer_expiry(response: httpx.Response) -> datetime | None:
    """The expiry of the server certificate of an open response; None without TLS."""
    try:
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return certs.not_after(der) if der else None
    except Exception:  # best effort: a certificate that cannot be read does not fail the check
        return None


def _decode(content: bytes, response: httpx.Response) -> tuple[str, Any]:
    """The body as text and as parsed JSON (None when it is not JSON)."""
    try:
        textual = content.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:
        textual = content.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(textual) if textual.strip() else None
    except ValueError:
        parsed = None
    return textual, parsed


async def _exchange(
    spec: HttpSpec, client: httpx.AsyncClient, recorder: PhaseRecorder
) -> tuple[httpx.Response, bytes, datetime | None]:
    """Send the request; return the response, its (capped) body and certificate expiry."""
    request = client.build_request(
        spec.method,
        spec.url,
        headers=spec.headers,
        content=spec.body.encode() if spec.body is not None else None,
        timeout=spec.timeout_s,
        extensions={"trace": recorder.trace},
    )
    response = await client.send(request, stream=True, follow_redirects=spec.follow_redirects)
    try:
        return response, await _read_capped(response), _peer_expiry(response)
    finally:
        await response.aclose()


def _test(spec: HttpSpec, response: httpx.Response, content: bytes, total_ms: float) -> bool:
    """Evaluate the CEL test (true when there is none).

    Raises:
        CelError: the expression is broken.
    """
    if spec.expr is None:
        return True
    textual, parsed = _decode(content, response)
    headers = dict(response.headers.items())
    elapsed = timedelta(milliseconds=total_ms)
    code = response.status_code
    return evaluate(spec.expr, http_context(code, headers, textual, parsed, elapsed))


async def check_http(
    check: Mapping[str, Any], clients: ClientPool, now: Callable[[], datetime]
) -> Verdict:
    """Send the check's request and judge the response.

    Args:
        check: The check as served (url, method, headers, body, responseCodes,
            thresholdMillis, followRedirects, test, timeout_ms).
        clients: The shared HTTP clients.
        now: The clock, for certificate days left.

    Returns:
        "pass", "fail" naming every failed condition, or "error" for a broken test
        expression. Phases carry connect_ms, tls_ms, first_byte_ms, total_ms and, for
        HTTPS, cert_days_left.
    """
    spec = HttpSpec.parse(check)
    recorder = PhaseRecorder()
    response, content, expiry = await _exchange(spec, clients.client(), recorder)
    total_ms = recorder.elapsed_ms()
    code = response.status_code
    phases = recorder.phases(total_ms)
    message = None
    if expiry is not None:
        days = certs.days_left(expiry, now())
        phases["cert_days_left"] = round(days, 3)
        message = certs.describe(expiry, days)
    failures = _code_failures(code, spec.codes) + over_threshold(total_ms, spec.threshold_ms)
    try:
        if not _test(spec, response, content, total_ms):
            failures.append(f"test {spec.expr!r} is false (code {code}, {total_ms:.1f}ms)")
    except CelError as error:
        return Verdict("error", str(error), code, phases)
    return judge(failures, message, code=code, phases=phases)
