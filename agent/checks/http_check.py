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
from agent.checks.rules import display_error, settle
from agent.expressions.cel import CelError, display, evaluate, free_variables, reads
from agent.expressions.celvars import canonical_header, check_context, http_context
from agent.expressions.gotemplate import TemplateError, parse, render


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
            # 0 is no limit, as in canary-checker (`if check.MaxSSLExpiry > 0`).
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


def _text(content: bytes, response: httpx.Response) -> str:
    try:
        return content.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def _json(textual: str) -> Any:
    """The body parsed as JSON; None when it is not JSON, or nested too deeply to parse
    (canary-checker, whose Go parser stops at 10,000 levels, then gives `{}` too)."""
    try:
        return json.loads(textual) if textual.strip() else None
    except (ValueError, RecursionError):
        return None


def _decode(content: bytes, response: httpx.Response) -> tuple[str, Any]:
    """The body as text and as parsed JSON (None when it is not JSON)."""
    textual = _text(content, response)
    return textual, _json(textual)


class HttpProgress:
    """How far one run got, for the dispatcher to report when the run ends in an exception:
    the final response's status once its head arrived, the phases measured so far, and the
    stage, so a body that stalls after a 200 does not read like a server that never answered.
    """

    def __init__(self) -> None:
        """Start the run's clock (the phases are measured from now)."""
        self.recorder = PhaseRecorder()
        self.code: int | None = None
        self.reading = False  # the final response's body
        self.redirect: str | None = None  # the redirect being followed

    def phases(self) -> dict[str, float] | None:
        """The phases measured so far; None when nothing was (no connection was made)."""
        measured = self.recorder.phases(self.recorder.elapsed_ms())
        return measured if len(measured) > 1 else None

    def describe(self, what: str, timed_out: bool) -> str:
        """`what` ended the run, said with where the run was.

        An exception's text is kept, with the redirect being followed (the URL that failed
        is not the check's); its row carries the status. A timeout says the stage too:
        `timed out after 2000ms reading the body (status 200 received)`.
        """
        if not timed_out:
            return f"{what} ({self.redirect})" if self.redirect else what
        stage = "reading the body" if self.reading else self.redirect
        said = f"{what} {stage}" if stage else what
        return f"{said} (status {self.code} received)" if self.code is not None else said


@dataclass(frozen=True)
class Answer:
    """The final response of a run, its body, certificate expiry and redirects followed
    (`unfollowed`: where the last pointed, when its scheme was not http or https)."""

    response: httpx.Response
    content: bytes
    expiry: datetime | None
    redirects: int
    unfollowed: str | None = None


async def _exchange(
    spec: HttpSpec, client: httpx.AsyncClient, progress: HttpProgress, limits: ResponseLimits
) -> Answer:
    """Send the request, follow its redirects and read the final response.

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
        extensions={"trace": progress.recorder.trace},
    )
    follow = spec.follow_redirects and spec.max_redirects != 0
    limit = _redirect_limit(spec, client) if follow else None
    response, redirects, unfollowed = await _send(client, request, auth, progress, limit)
    try:
        progress.code, progress.reading = response.status_code, True
        # The probe transport counted the headers already; httpx's own (behind a proxy) not.
        if len(response.headers.raw) > limits.max_headers:
            raise limits.too_many_headers()
        content = await read_body(response, limits)
        progress.reading = False
        return Answer(response, content, _peer_expiry(response), redirects, unfollowed)
    finally:
        await response.aclose()


def _redirect_limit(spec: HttpSpec, client: httpx.AsyncClient) -> int:
    """The check's `maxRedirects`, else the client's limit (httpx's 20)."""
    return client.max_redirects if spec.max_redirects is None else spec.max_redirects


async def _send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    auth: httpx.Auth | None,
    progress: HttpProgress,
    limit: int | None,
) -> tuple[httpx.Response, int, str | None]:
    """Send `request` and follow its redirects, never reading a redirect's body.

    httpx reads (and decodes) the whole body of each redirect it follows, which a hostile
    target can make endless; here each redirect is closed unread. As with httpx, the
    credentials go with the first request only, and a redirect keeps the `Authorization`
    header only within the same origin.

    At most `limit + 1` redirects are followed (none when `limit` is None), enough to show
    that the target redirects more than it may; a redirect to a scheme other than http or
    https is not followed.

    Returns:
        The final response (open), the redirects followed, and the URL (as shown) of a
        redirect that was not followed for its scheme.
    """
    if auth is None:  # the client's default: the URL's user:password@, if any
        response = await client.send(request, stream=True, follow_redirects=False)
    else:
        response = await client.send(request, stream=True, follow_redirects=False, auth=auth)
    followed, unfollowed = 0, None
    while limit is not None and followed <= limit and response.next_request is not None:
        target = response.next_request.url
        if target.scheme not in ("http", "https"):
            # As the target wrote it: httpx gives `file:///x` the host of the request.
            unfollowed = _shown(httpx.URL(response.headers["location"]))
            break
        await response.aclose()
        followed += 1
        progress.redirect = f"following redirect {followed} to {_shown(target)!r}"
        response = await client.send(response.next_request, stream=True, follow_redirects=False)
    progress.redirect = None
    return response, followed, unfollowed


def _shown(url: httpx.URL) -> str:
    """A URL as results show it: without `user:password@` and the query, where secrets and
    tokens travel (results are stored and published on the status site)."""
    query = "?…" if url.query else ""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}{query}"[:200]


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]


@dataclass(frozen=True)
class Reply:
    """What the expressions of a check see of one response."""

    code: int
    headers: list[tuple[str, str]]
    text: str
    body: Any  # the parsed JSON body; None when it is not JSON or no expression reads it
    elapsed: timedelta
    ssl_age: timedelta | None


def _cel_context(expr: str, spec: HttpSpec, reply: Reply) -> dict[str, Any]:
    """The variables `expr` reads, and only those: building the others (header map, JSON
    body, check and canary) would cost more than most expressions take to evaluate.

    Raises:
        CelError: the expression does not compile, or the JSON body it reads cannot be
            given to CEL.
    """
    wanted = free_variables(expr)
    context = http_context(
        reply.code, reply.headers, reply.text, reply.body, reply.elapsed, reply.ssl_age, wanted
    )
    return {**context, **check_context(spec.context or {}, wanted)}


def _reads_json(spec: HttpSpec) -> bool:
    """Whether the check's `test` or `display` reads the JSON body, which is parsed only
    then: a large or hostile body costs nothing to a check that does not look at it."""
    if reads("json", spec.expr, spec.display_expr):
        return True
    if spec.display_template is None:
        return False
    try:
        paths = [piece.path for piece in parse(spec.display_template) if not isinstance(piece, str)]
    except TemplateError:
        return True  # it fails anyway
    return any(not path or path[0] == "json" for path in paths)  # `{{.}}` is everything


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
        CelError: the display expression or template is broken.
    """
    if spec.display_expr is not None:
        return display(spec.display_expr, _cel_context(spec.display_expr, spec, reply))
    if spec.display_template is not None:
        try:
            return render(spec.display_template, _template_data(spec, reply))
        except TemplateError as error:
            raise CelError(str(error)) from error
        except RecursionError:  # toJSON of a body nested too deeply
            raise CelError("the JSON body is nested too deeply to render") from None
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


def _redirect_failures(spec: HttpSpec, answer: Answer, limit: int) -> list[str]:
    if answer.unfollowed is not None:
        return [f"redirected to {answer.unfollowed!r}, which is not http(s)"]
    if answer.redirects <= limit:
        return []
    allowed = f"maxRedirects {limit}"
    if spec.max_redirects is None:
        allowed = f"the {limit} followed without maxRedirects"
    return [f"followed {answer.redirects} redirects, more than {allowed}"]


def _expressions(spec: HttpSpec, reply: Reply, failures: list[str]) -> str | None:
    """Apply the `test` and `display`; return the message `display` gives.

    Raises:
        CelError: an expression broke and no condition failed (see `rules.settle`).
    """
    errors: list[str] = []
    try:
        if spec.expr is not None and not evaluate(spec.expr, _cel_context(spec.expr, spec, reply)):
            elapsed_ms = reply.elapsed.total_seconds() * 1000
            failures.append(f"test {spec.expr!r} is false (code {reply.code}, {elapsed_ms:.1f}ms)")
    except CelError as error:
        errors.append(str(error))
    shown = None
    try:
        shown = _display(spec, reply)
    except CelError as error:
        errors.append(display_error(error))
    return settle(failures, errors, shown)


async def check_http(
    check: Mapping[str, Any],
    clients: ClientPool,
    now: Callable[[], datetime],
    progress: HttpProgress | None = None,
) -> Verdict:
    """Send the check's request and judge the response.

    Args:
        check: The check as served (url, method, headers, body, username, password,
            digest, oauth2, tlsConfig, responseCodes, responseContent, maxSSLExpiry,
            maxRedirects, thresholdMillis, followRedirects, test, display, timeout_ms).
        clients: The shared HTTP clients.
        now: The clock, for certificate days left.
        progress: Where the run's status, phases and stage are kept as it goes, for the
            dispatcher to report when the run ends in an exception.

    Returns:
        "pass"; "fail" naming every failed condition (a broken test or display is named
        after them); "error" for a broken test or display when nothing else failed. The
        message is `display`'s when there is one. Phases carry connect_ms, tls_ms,
        first_byte_ms, total_ms and, for HTTPS, cert_days_left.
    """
    spec = HttpSpec.parse(check)
    progress = HttpProgress() if progress is None else progress
    client = clients.client()
    if spec.tls is not None:
        ca = spec.tls.get("ca")
        insecure = bool(spec.tls.get("insecureSkipVerify"))
        client = clients.tls_client(insecure, ca if isinstance(ca, str) else None)
    answer = await _exchange(spec, client, progress, clients.limits)
    total_ms = progress.recorder.elapsed_ms()
    code = answer.response.status_code
    phases = progress.recorder.phases(total_ms)
    message = None
    days = None
    if answer.expiry is not None:
        days = certs.days_left(answer.expiry, now())
        phases["cert_days_left"] = round(days, 3)
        phases["cert_not_after"] = answer.expiry.timestamp()
        message = certs.describe(answer.expiry, days)
    textual = _text(answer.content, answer.response)
    reply = Reply(
        code,
        _headers(answer.response),
        textual,
        _json(textual) if _reads_json(spec) else None,
        timedelta(milliseconds=total_ms),
        None if days is None else timedelta(days=days),
    )
    failures = _code_failures(code, spec.codes) + over_threshold(total_ms, spec.threshold_ms)
    failures += _redirect_failures(spec, answer, _redirect_limit(spec, client))
    failures += _body_failures(spec, reply) + _ssl_failures(spec, answer.expiry, days)
    try:
        shown = _expressions(spec, reply, failures)
    except CelError as error:
        return Verdict("error", str(error), code, phases)
    return judge(failures, message if shown is None else shown, code=code, phases=phases)
