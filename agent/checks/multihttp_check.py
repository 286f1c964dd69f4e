"""The multihttp check: up to ten HTTP requests in order, each with assertions, passing values
captured from one response to later requests as `${name}` (Grafana SM's multihttp).

Requests go through the agent's own HTTP clients and transport, as HTTP checks do. Cookies a
response sets are sent on the later requests of the same run (a login step's session), and
never kept past the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent.checks.fields import integer, items, threshold
from agent.checks.http_check import _decode, _headers
from agent.checks.jsonpath import as_text, find
from agent.checks.limits import read_body
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.phases import PhaseRecorder
from agent.checks.pool import ClientPool

_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHOWN = 80


class StepError(Exception):
    """A step could not be sent (a variable it uses has no value)."""


@dataclass(frozen=True)
class Response:
    """What assertions and captures see of one response."""

    code: int
    headers: list[tuple[str, str]]
    text: str
    json: Any

    def subject(self, name: str) -> str:
        """The text an assertion's subject names."""
        if name == "HTTP_STATUS_CODE":
            return str(self.code)
        if name == "RESPONSE_HEADERS":
            return "\n".join(f"{k.lower()}: {v}" for k, v in self.headers)
        return self.text


def describe(error: BaseException) -> str:
    """An exception as `Type: text`."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def shown_url(url: str) -> str:
    """A URL as results show it: without `user:password@` and the query, where secrets and
    tokens travel (results are stored and published on the status site)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return _shorten(url.partition("?")[0])
    host = parts.netloc.rpartition("@")[2]
    query = "?…" if parts.query else ""
    return _shorten(f"{parts.scheme}://{host}{parts.path}{query}")


def _shorten(value: str) -> str:
    return value if len(value) <= _SHOWN else value[: _SHOWN - 1] + "…"


def _compare(condition: str, actual: str, wanted: str) -> bool:
    match condition:
        case "CONTAINS":
            return wanted in actual
        case "NOT_CONTAINS":
            return wanted not in actual
        case "EQUALS":
            return actual == wanted
        case "NOT_EQUALS":
            return actual != wanted
        case "STARTS_WITH":
            return actual.startswith(wanted)
        case "ENDS_WITH":
            return actual.endswith(wanted)
    raise ValueError(f"unknown assertion condition {condition!r}")


def _describe(assertion: Mapping[str, Any]) -> str:
    kind = str(assertion.get("type"))
    parts = [kind]
    if kind in ("TEXT", "REGEX_ASSERTION"):
        parts.append(str(assertion.get("subject", "RESPONSE_BODY")))
    if assertion.get("expression"):
        parts.append(repr(assertion["expression"]))
    if assertion.get("condition"):
        parts.append(f"{assertion['condition']} {assertion.get('value', '')!r}")
    return " ".join(parts)


def assertion_failure(assertion: Mapping[str, Any], response: Response) -> str | None:
    """Why an assertion does not hold of a response, or None when it holds.

    Raises:
        ValueError: the assertion is malformed.
    """
    kind = assertion.get("type")
    expression = str(assertion.get("expression") or "")
    condition = str(assertion.get("condition") or "")
    wanted = str(assertion.get("value") or "")
    subject = str(assertion.get("subject") or "RESPONSE_BODY")
    if kind == "TEXT":
        actual = response.subject(subject)
        if _compare(condition, actual, wanted):
            return None
        return f"found {_shorten(actual)!r}"
    if kind == "REGEX_ASSERTION":
        if re.search(expression, response.subject(subject)):
            return None
        return "no match"
    values = find(response.json, expression) if response.json is not None else []
    if kind == "JSON_PATH_ASSERTION":
        return None if values else "the path matches nothing in the body"
    if kind == "JSON_PATH_VALUE":
        if not values:
            return "the path matches nothing in the body"
        texts = [as_text(v) for v in values]
        if any(_compare(condition, t, wanted) for t in texts):
            return None
        return f"found {_shorten(', '.join(texts))!r}"
    raise ValueError(f"unknown assertion type {kind!r}")


def capture(variable: Mapping[str, Any], response: Response) -> str | None:
    """The value a variable captures from a response, or None when nothing matches."""
    kind, expression = variable.get("type"), str(variable.get("expression") or "")
    if kind == "HEADER":
        wanted = expression.lower()
        return next((v for k, v in response.headers if k.lower() == wanted), None)
    if kind == "REGEX":
        match = re.search(expression, response.text)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)
    if kind == "JSON_PATH":
        values = find(response.json, expression) if response.json is not None else []
        return as_text(values[0]) if values else None
    raise ValueError(f"unknown variable type {kind!r}")


def substitute(template: str, variables: Mapping[str, str]) -> str:
    """Replace each `${name}` with a captured value.

    Raises:
        StepError: a name has no captured value.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise StepError(f"variable ${{{name}}} has no value")
        return variables[name]

    return _VARIABLE_USE.sub(value, template)


def _cookies(headers: list[tuple[str, str]], jar: dict[str, str]) -> None:
    for name, value in headers:
        if name.lower() != "set-cookie":
            continue
        try:
            parsed = SimpleCookie(value)
        except CookieError:
            continue  # a cookie Python cannot parse is not sent back; the flow may then fail
        jar.update({key: morsel.value for key, morsel in parsed.items()})


@dataclass
class _Flow:
    """The state a run carries from one step to the next."""

    variables: dict[str, str]
    cookies: dict[str, str]
    steps_ms: list[float]
    lines: list[str]


async def _step(
    index: int,
    entry: Mapping[str, Any],
    flow: _Flow,
    clients: ClientPool,
    timeout_s: float,
) -> tuple[int, list[str]]:
    """Send one entry's request; return its status and the failures of its assertions."""
    request = entry.get("request")
    if not isinstance(request, Mapping):
        raise ValueError(f"entry {index} has no request")
    method = str(request.get("method") or "GET").upper()
    url = substitute(str(request.get("url") or ""), flow.variables)
    headers = [
        (str(h["name"]), substitute(str(h.get("value") or ""), flow.variables))
        for h in items(request, "headers")
    ]
    if flow.cookies:
        headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in flow.cookies.items())))
    body = request.get("body")
    content = substitute(str(body), flow.variables).encode() if body is not None else None
    client = clients.client()
    recorder = PhaseRecorder()
    built = client.build_request(
        method,
        url,
        headers=headers,
        content=content,
        timeout=max(timeout_s, 0.001),
        extensions={"trace": recorder.trace},
    )
    response = await client.send(built, stream=True, follow_redirects=False)
    try:
        # Within the agent's response limits, as an http check reads (agent/checks/limits.py).
        raw = await read_body(response, clients.limits)
    finally:
        await response.aclose()
    elapsed = recorder.elapsed_ms()
    flow.steps_ms.append(round(elapsed, 3))
    textual, parsed = _decode(raw, response)
    reply = Response(response.status_code, _headers(response), textual, parsed)
    flow.lines.append(f"{index} {method} {shown_url(url)} {reply.code} {elapsed:.1f}ms")
    _cookies(reply.headers, flow.cookies)
    failures = []
    for number, assertion in enumerate(items(entry, "assertions"), start=1):
        failure = assertion_failure(assertion, reply)
        if failure is not None:
            failures.append(f"assertion {number} ({_describe(assertion)}) failed: {failure}")
    for variable in items(entry, "variables"):
        value = capture(variable, reply)
        if value is None:
            name, expression = variable.get("name"), variable.get("expression")
            failures.append(f"variable {name} captured nothing ({expression!r})")
        else:
            flow.variables[str(variable["name"])] = value
    return reply.code, failures


async def check_multihttp(
    check: Mapping[str, Any], clients: ClientPool, now: Callable[[], datetime]
) -> Verdict:
    """Run the check's entries in order; stop at the first step that fails.

    Args:
        check: The check as served (entries, thresholdMillis, timeout_ms).
        clients: The shared HTTP clients.
        now: The clock (unused: there are no certificate conditions).

    Returns:
        "pass" with every step's method, URL, status and time; "fail" naming the step and
        each assertion that failed (or why the request could not be sent); "error" naming
        the step that got no response within the check's timeout. The code is the
        last response's status; phases carry total_ms and steps_ms.
    """
    entries = items(check, "entries")
    timeout_s = (integer(check, "timeout_ms") or 10_000) / 1000
    flow = _Flow({}, {}, [], [])
    start = time.perf_counter()
    code: int | None = None
    failures: list[str] = []
    timed_out = False
    for index, entry in enumerate(entries, start=1):
        remaining = timeout_s - (time.perf_counter() - start)
        try:
            code, step_failures = await _step(index, entry, flow, clients, remaining)
        except StepError as error:
            step_failures = [str(error)]
        except httpx.TimeoutException:
            # As for an http check, a timeout is an error: the target was not judged.
            timed_out = True
            step_failures = [f"timed out after {round(timeout_s * 1000)}ms"]
        except httpx.TransportError as error:
            step_failures = [f"request failed: {describe(error)}"]
        if step_failures:
            request = entry.get("request") or {}
            where = f"{request.get('method', 'GET')} {shown_url(str(request.get('url')))}"
            failures.append(f"step {index} ({where}): {'; '.join(step_failures)}")
            if index < len(entries):
                failures[-1] += f" (steps {index + 1}-{len(entries)} not run)"
            break
    total_ms = (time.perf_counter() - start) * 1000
    failures += over_threshold(total_ms, threshold(check))
    phases: dict[str, Any] = {"total_ms": round(total_ms, 3), "steps_ms": flow.steps_ms}
    summary = "; ".join(flow.lines)
    if failures:
        failures = [f"{'; '.join(failures)} [{summary}]" if summary else "; ".join(failures)]
    if timed_out:
        return Verdict("error", failures[0], code, phases)
    return judge(failures, f"{len(flow.lines)} steps: {summary}", code=code, phases=phases)
