"""The HTTP check: status codes, latency, body text, a CEL test and display, auth, timing
phases and certificate expiry (canary-checker's http check semantics)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from agent.checks import certs
from agent.checks.fields import flag, integer, items, required_text, text, threshold
from agent.checks.limits import BoundedDigestAuth, ResponseLimits, read_body
from agent.checks.oauth import client_credentials_token
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.phases import PhaseRecorder
from agent.checks.pool import ClientPool
from agent.expressions.cel import (
    CelError,
    canonical_header,
    check_context,
    display,
    evaluate,
    free_variables,
    http_context,
)
from agent.expressions.gotemplate import TemplateError, render


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
    username: str | None = None
    password: str | None = None
    digest: bool = False
    max_redirects: int | None = None
    response_content: str | None = None
    max_ssl_expiry: int | None = None
    display_expr: str | None = None
    display_template: str | None = None
    context: Mapping[str, Any] | None = None
    oauth2: Mapping[str, Any] | None = None
    tls: Mapping[str, Any] | None = None

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
            username=text(check, "username"),
            password=text(check, "password"),
            digest=flag(check, "digest", False),
            max_redirects=integer(check, "maxRedirects"),
            response_content=text(check, "responseContent") or None,
            max_ssl_expiry=integer(check, "maxSSLExpiry") or None,
            display_expr=_expression(check.get("display")),
            display_template=_template(check.get("display")),
            context=check,
            oauth2=check.get("oauth2") if isinstance(check.get("oauth2"), Mapping) else None,
            tls=check.get("tlsConfig") if isinstance(check.get("tlsConfig"), Mapping) else None,
        )


def _header(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ValueError(f"header {entry!r} is not {{name, value}}")
    return entry["name"], str(entry.get("value") or "")


def _template(display: Any) -> str | None:
    if isinstance(display, Mapping) and isinstance(display.get("template"), str):
        return str(display["template"])
    return None


def _auth(spec: HttpSpec, limits: ResponseLimits) -> httpx.Auth | None:
    if spec.username is None and spec.password is None:
        return None  # httpx still sends user:password@ of the URL as basic auth
    username, password = spec.username or "", spec.password or ""
    if spec.digest:
        return BoundedDigestAuth(username, password, limits)
    return httpx.BasicAuth(username, password)


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
    spec: HttpSpec, client: httpx.AsyncClient, recorder: PhaseRecorder, limits: ResponseLimits
) -> tuple[httpx.Response, bytes, datetime | None]:
    """Send the request; return the response, its body and certificate expiry.

    Raises:
        ResponseTooLarge: the response went past one of `limits`.
    """
    headers = list(spec.headers)
    auth = _auth(spec, limits)
    if spec.oauth2 is not None:
        # canary-checker drops basic auth when oauth2 is set: the credentials get a token.
        token = await client_credentials_token(
            client, spec.oauth2, spec.username or "", spec.password or "", spec.timeout_s, limits
        )
        headers.append(("Authorization", f"Bearer {token}"))
        auth = None
    request = client.build_request(
        spec.method,
        spec.url,
        headers=headers,
        content=spec.body.encode() if spec.body is not None else None,
        timeout=spec.timeout_s,
        extensions={"trace": recorder.trace},
    )
    follow = spec.follow_redirects and spec.max_redirects != 0
    response = await _send(client, request, follow, auth)
    try:
        # The probe transport counted the headers already; httpx's own (behind a proxy) not.
        if len(response.headers.raw) > limits.max_headers:
            raise limits.too_many_headers()
        return response, await read_body(response, limits), _peer_expiry(response)
    finally:
        await response.aclose()


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, follow: bool, auth: httpx.Auth | None
) -> httpx.Response:
    """Send `request` and follow its redirects, never reading a redirect's body.

    httpx reads (and decodes) the whole body of each redirect it follows, which a hostile
    target can make endless; here each redirect is closed unread. As with httpx, the
    credentials go with the first request only, and a redirect keeps the `Authorization`
    header only within the same origin.

    Raises:
        httpx.TooManyRedirects: more redirects than the client's `max_redirects` (20).
    """
    if auth is None:  # the client's default: the URL's user:password@, if any
        response = await client.send(request, stream=True, follow_redirects=False)
    else:
        response = await client.send(request, stream=True, follow_redirects=False, auth=auth)
    history: list[httpx.Response] = []
    while follow and response.next_request is not None:
        await response.aclose()
        history.append(response)
        if len(history) > client.max_redirects:
            raise httpx.TooManyRedirects(
                "Exceeded maximum allowed redirects.", request=response.next_request
            )
        response = await client.send(response.next_request, stream=True, follow_redirects=False)
    response.history = history
    return response


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]


@dataclass(frozen=True)
class Reply:
    """What the expressions of a check see of one response."""

    code: int
    headers: list[tuple[str, str]]
    text: str
    body: Any
    elapsed: timedelta
    ssl_age: timedelta | None


def _cel_context(expr: str, spec: HttpSpec, reply: Reply) -> dict[str, Any]:
    """The variables `expr` reads, and only those: building the others (header map, JSON
    body, check and canary) would cost more than most expressions take to evaluate."""
    wanted = free_variables(expr)
    context = http_context(
        reply.code, reply.headers, reply.text, reply.body, reply.elapsed, reply.ssl_age, wanted
    )
    return {**context, **check_context(spec.context or {}, wanted)}


def _template_data(spec: HttpSpec, reply: Reply) -> dict[str, Any]:
    served = spec.context or {}
    return {
        "code": reply.code,
        "headers": {canonical_header(k): v for k, v in reply.headers},
        "content": reply.text,
        "json": {} if reply.body is None else reply.body,
        "elapsed": reply.elapsed,
        "sslAge": reply.ssl_age or timedelta(0),
        "check": {"name": served.get("name", ""), "description": served.get("description", "")},
        "canary": served.get("canary", {}),
    }


def _display(spec: HttpSpec, reply: Reply) -> str | None:
    """The result message `display` gives (None without one).

    Raises:
        CelError: the display expression is broken.
    """
    if spec.display_expr is not None:
        return display(spec.display_expr, _cel_context(spec.display_expr, spec, reply))
    if spec.display_template is not None:
        try:
            return render(spec.display_template, _template_data(spec, reply))
        except TemplateError as error:
            raise CelError(str(error)) from error
    return None


def _body_failures(spec: HttpSpec, reply: Reply) -> list[str]:
    if spec.response_content is not None and spec.response_content not in reply.text:
        shown = reply.text[:100] + ("…" if len(reply.text) > 100 else "")
        return [f"expected the body to contain {spec.response_content!r}, found {shown!r}"]
    return []


def _ssl_failures(spec: HttpSpec, expiry: datetime | None, days: float | None) -> list[str]:
    if spec.max_ssl_expiry is None:
        return []
    if expiry is None or days is None:
        return ["no certificate found to check its expiry (maxSSLExpiry)"]
    if days < spec.max_ssl_expiry:
        return [f"{certs.describe(expiry, days)}, fewer than maxSSLExpiry {spec.max_ssl_expiry}"]
    return []


def _redirect_failures(spec: HttpSpec, response: httpx.Response) -> list[str]:
    limit = spec.max_redirects
    if limit is not None and limit > 0 and len(response.history) > limit:
        return [f"followed {len(response.history)} redirects, more than maxRedirects {limit}"]
    return []


async def check_http(
    check: Mapping[str, Any], clients: ClientPool, now: Callable[[], datetime]
) -> Verdict:
    """Send the check's request and judge the response.

    Args:
        check: The check as served (url, method, headers, body, username, password,
            digest, oauth2, tlsConfig, responseCodes, responseContent, maxSSLExpiry,
            maxRedirects, thresholdMillis, followRedirects, test, display, timeout_ms).
        clients: The shared HTTP clients.
        now: The clock, for certificate days left.

    Returns:
        "pass", "fail" naming every failed condition, or "error" for a broken test or
        display expression. The message is `display`'s when there is one. Phases carry
        connect_ms, tls_ms, first_byte_ms, total_ms and, for HTTPS, cert_days_left.
    """
    spec = HttpSpec.parse(check)
    recorder = PhaseRecorder()
    client = clients.client()
    if spec.tls is not None:
        ca = spec.tls.get("ca")
        insecure = bool(spec.tls.get("insecureSkipVerify"))
        client = clients.tls_client(insecure, ca if isinstance(ca, str) else None)
    response, content, expiry = await _exchange(spec, client, recorder, clients.limits)
    total_ms = recorder.elapsed_ms()
    code = response.status_code
    phases = recorder.phases(total_ms)
    message = None
    days = None
    if expiry is not None:
        days = certs.days_left(expiry, now())
        phases["cert_days_left"] = round(days, 3)
        phases["cert_not_after"] = expiry.timestamp()
        message = certs.describe(expiry, days)
    textual, parsed = _decode(content, response)
    reply = Reply(
        code,
        _headers(response),
        textual,
        parsed,
        timedelta(milliseconds=total_ms),
        None if days is None else timedelta(days=days),
    )
    failures = _code_failures(code, spec.codes) + over_threshold(total_ms, spec.threshold_ms)
    failures += _redirect_failures(spec, response)
    failures += _body_failures(spec, reply) + _ssl_failures(spec, expiry, days)
    try:
        if spec.expr is not None and not evaluate(spec.expr, _cel_context(spec.expr, spec, reply)):
            failures.append(f"test {spec.expr!r} is false (code {code}, {total_ms:.1f}ms)")
        shown = _display(spec, reply)
    except CelError as error:
        return Verdict("error", str(error), code, phases)
    if shown is not None:
        message = shown
        failures = [f"{'; '.join(failures)} ({shown})"] if failures else []
    return judge(failures, message, code=code, phases=phases)
