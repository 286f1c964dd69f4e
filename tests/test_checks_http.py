"""HTTP checks against a real HTTP server on 127.0.0.1: codes, latency, CEL (and how a broken
expression weighs against failed conditions), redirects and maxRedirects, phases, and what an
error row keeps of a run cut short."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from agent.checks import CheckOutcome, ClientPool, result_row, run_check
from agent.checks.limits import ResponseLimits
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError
from tests import httpd

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RELEASE = threading.Event()
LOOPS: list[str] = []  # the paths of the requests /loop received
MAINTENANCE = b"<html>maintenance page</html>"


class Handler(BaseHTTPRequestHandler):
    """JSON, text, status, redirect, slow, hanging and echo endpoints."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, document: object, code: int = 200) -> None:
        self.reply(code, json.dumps(document).encode(), "application/json", X_Canary="yes")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/json":
            self.reply_json({"status": "ok", "items": [1, 2, 3]})
        elif url.path == "/text":
            self.reply(200, b"hello canary", "text/plain; charset=utf-8")
        elif url.path.startswith("/status/"):
            self.reply(int(url.path.rsplit("/", 1)[1]), b"status", "text/plain")
        elif url.path == "/redirect":
            self.reply(302, b"", "text/plain", Location="/json")
        elif url.path == "/slow":
            # A lower bound on the response time: the server answers no sooner than `ms`.
            RELEASE.wait(int(query["ms"][0]) / 1000)
            self.reply(200, b"late", "text/plain")
        elif url.path == "/hang":
            RELEASE.wait(30)
            self.reply(200, b"too late", "text/plain")
        elif url.path == "/maintenance":
            self.reply(503, MAINTENANCE, "text/html")
        elif url.path == "/loop":
            LOOPS.append(self.path)
            self.reply(302, b"", "text/plain", Location="/loop")
        elif url.path.startswith("/redirects/"):  # /redirects/N: N more redirects, then /json
            left = int(url.path.rsplit("/", 1)[1])
            self.reply(
                302, b"", "text/plain", Location=f"/redirects/{left - 1}" if left else "/json"
            )
        elif url.path == "/elsewhere":  # Location given in the query
            self.reply(302, b"", "text/plain", Location=query["to"][0])
        elif url.path == "/deep":  # JSON nested deeper than Python's parser goes
            self.reply(200, b"[" * 100_000 + b"]" * 100_000, "application/json")
        elif url.path == "/big-number":
            self.reply(200, b'{"id": 99999999999999999999999, "status": "ok"}', "application/json")
        elif url.path.startswith("/cut/"):  # the head, part of the body, then stall or close
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten..")
            if url.path == "/cut/stall":
                RELEASE.wait(30)
            self.close_connection = True
        else:
            self.reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        self.reply_json({"method": "POST", "body": body, "auth": self.headers["Authorization"]})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with httpd.serving(Handler) as server:
        yield httpd.url(server)
        RELEASE.set()  # handlers still waiting on it end before the server stops


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def http(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "timeout_ms": 5000, "url": url, **fields}


def run(check: Mapping[str, Any], limits: ResponseLimits | None = None) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=2, trust_env=False, limits=limits) as pool:
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def test_a_2xx_answer_passes_with_phases(base_url: str) -> None:
    outcome = run(http(f"{base_url}/json"))
    assert (outcome.status, outcome.code, outcome.message) == ("pass", 200, None)
    assert outcome.started_at == NOW
    assert outcome.duration_ms > 0
    assert outcome.phases is not None
    assert {"connect_ms", "first_byte_ms", "total_ms"} <= set(outcome.phases)
    assert "tls_ms" not in outcome.phases
    assert 0 <= outcome.phases["connect_ms"] <= outcome.phases["first_byte_ms"]
    assert outcome.phases["first_byte_ms"] <= outcome.phases["total_ms"] <= outcome.duration_ms


def test_a_wrong_status_code_fails_naming_it(base_url: str) -> None:
    outcome = run(http(f"{base_url}/status/500"))
    assert (outcome.status, outcome.code) == ("fail", 500)
    assert outcome.message == "status code 500 is not 2xx"
    listed = run(http(f"{base_url}/json", responseCodes=[201, 204]))
    assert listed.status == "fail"
    assert listed.message == "status code 200 is not one of the accepted codes [201, 204]"


def test_accepted_codes_may_be_errors(base_url: str) -> None:
    assert run(http(f"{base_url}/status/503", responseCodes=[503])).status == "pass"


def test_slower_than_the_threshold_fails(base_url: str) -> None:
    outcome = run(http(f"{base_url}/slow?ms=40", thresholdMillis=5))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.endswith("over thresholdMillis 5")
    assert run(http(f"{base_url}/slow?ms=0", maxResponseTime=4000)).status == "pass"


@pytest.mark.parametrize(
    ("path", "expr"),
    [
        ("/json", "json.status == 'ok' && size(json.items) == 3 && json.items[2] == 3"),
        ("/json", "headers['x-canary'] == 'yes' && headers['content-type'] == 'application/json'"),
        ("/text", "content.startsWith('hello') && content.contains('canary')"),
        ("/text", "json == {}"),  # canary-checker: json is {} when the body is not JSON
        ("/status/418", "code == 418"),
        ("/json", "elapsed < duration('30s')"),
    ],
)
def test_a_true_cel_test_passes(base_url: str, path: str, expr: str) -> None:
    codes = [418] if path == "/status/418" else []
    outcome = run(http(f"{base_url}{path}", responseCodes=codes, test={"expr": expr}))
    assert (outcome.status, outcome.message) == ("pass", None)


@pytest.mark.parametrize(
    ("path", "expr"),
    [
        ("/json", "json.status == 'down'"),
        ("/json", "headers['x-canary'] == 'no'"),
        ("/text", "content == 'goodbye'"),
        ("/json", "code == 201"),
    ],
)
def test_a_false_cel_test_fails_with_the_expression(base_url: str, path: str, expr: str) -> None:
    outcome = run(http(f"{base_url}{path}", test={"expr": expr}))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith(f"test {expr!r} is false (code 200, ")


def test_code_and_cel_failures_are_all_named(base_url: str) -> None:
    outcome = run(http(f"{base_url}/status/500", test={"expr": "code == 200"}))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith("status code 500 is not 2xx; test 'code == 200' is false")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("code ==", "CEL expression does not compile"),
        ("json.missing == 1", "CEL expression failed: no such member in mapping: 'missing'"),
        ("nosuchvariable == 1", "CEL expression failed: undeclared reference to 'nosuchvariable'"),
        ("1 + 2", "CEL expression gave IntType IntType(3), not a bool"),
    ],
)
def test_a_broken_cel_test_is_an_error(base_url: str, expr: str, message: str) -> None:
    outcome = run(http(f"{base_url}/json", test={"expr": expr}))
    assert (outcome.status, outcome.code) == ("error", 200)
    assert outcome.message is not None
    assert outcome.message.startswith(message)
    assert len(outcome.message) < 400


def test_a_hanging_server_times_out(base_url: str) -> None:
    outcome = run(http(f"{base_url}/hang", timeout_ms=200))
    assert (outcome.status, outcome.message, outcome.code) == (
        "error",
        "timed out after 200ms",
        None,
    )


def test_redirects_are_followed_unless_disabled(base_url: str) -> None:
    followed = run(http(f"{base_url}/redirect", test={"expr": "json.status == 'ok'"}))
    assert (followed.status, followed.code) == ("pass", 200)
    kept = run(http(f"{base_url}/redirect", followRedirects=False))
    assert (kept.status, kept.code, kept.message) == ("fail", 302, "status code 302 is not 2xx")
    accepted = run(http(f"{base_url}/redirect", followRedirects=False, responseCodes=[302]))
    assert (accepted.status, accepted.code) == ("pass", 302)


def test_method_headers_and_body_are_sent(base_url: str) -> None:
    expr = "json.method == 'POST' && json.body == 'ping' && json.auth == 'Bearer s3cret'"
    outcome = run(
        http(
            f"{base_url}/echo",
            method="POST",
            body="ping",
            headers=[{"name": "Authorization", "value": "Bearer s3cret"}],
            test={"expr": expr},
        )
    )
    assert (outcome.status, outcome.message) == ("pass", None)


def test_a_refused_connection_is_an_error(closed_port: int) -> None:
    outcome = run(http(f"http://127.0.0.1:{closed_port}/"))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("ConnectError: ")


def test_null_fields_take_their_defaults(base_url: str) -> None:
    check = http(
        f"{base_url}/json",
        method=None,
        headers=None,
        body=None,
        responseCodes=None,
        thresholdMillis=None,
        followRedirects=None,
        test=None,
    )
    assert run(check).status == "pass"


def test_an_outcome_becomes_a_result_row(base_url: str) -> None:
    outcome = run(http(f"{base_url}/json"))
    row = result_row("default/web@eu-1", "web", outcome)
    assert (row.status, row.code, row.started_at) == ("pass", 200, NOW)
    assert row.phases is not None
    assert outcome.phases is not None
    assert row.phases.total_ms == outcome.phases["total_ms"]


def test_many_concurrent_checks_share_few_clients(base_url: str) -> None:
    async def main() -> list[CheckOutcome]:
        async with ClientPool(size=4, connections_per_client=2, trust_env=False) as pool:
            checks = [http(f"{base_url}/json") for _ in range(40)]
            return await asyncio.gather(*(run_check(c, pool, lambda: NOW) for c in checks))

    assert {o.status for o in asyncio.run(main())} == {"pass"}


# An expression that breaks on an answer that already failed (a maintenance page has no
# json.status) must not hide the failure, nor call the target's outage a broken config.


def test_a_broken_test_on_a_failed_answer_fails_naming_the_answer_first(base_url: str) -> None:
    outcome = run(http(f"{base_url}/maintenance", test={"expr": "json.status == 'ok'"}))
    assert (outcome.status, outcome.code) == ("fail", 503)
    assert outcome.message == (
        "status code 503 is not 2xx; CEL expression failed: no such member in mapping: 'status'"
    )
    assert outcome.phases is not None and "first_byte_ms" in outcome.phases


def test_every_failed_condition_comes_before_the_broken_test(base_url: str) -> None:
    check = http(
        f"{base_url}/maintenance", responseContent="welcome", test={"expr": "json.a.b == 1"}
    )
    outcome = run(check)
    assert outcome.status == "fail"
    assert outcome.message == (
        f"status code 503 is not 2xx; expected the body to contain 'welcome', found "
        f"{MAINTENANCE.decode()!r}; CEL expression failed: no such member in mapping: 'a'"
    )


def test_a_broken_display_on_a_failed_answer_fails_naming_the_answer_first(base_url: str) -> None:
    outcome = run(http(f"{base_url}/maintenance", display={"expr": "json.status"}))
    assert (outcome.status, outcome.code) == ("fail", 503)
    assert outcome.message == (
        "status code 503 is not 2xx; display: CEL expression failed: "
        "no such member in mapping: 'status'"
    )
    # A false test is a failure of the answer too; the display's error comes after it.
    false = run(http(f"{base_url}/json", test={"expr": "code == 201"}, display={"expr": "x"}))
    assert false.status == "fail"
    assert false.message is not None
    assert false.message.startswith("test 'code == 201' is false (code 200, ")
    assert false.message.endswith("; display: CEL expression failed: undeclared reference to 'x'")


def test_a_broken_expression_alone_is_still_an_error(base_url: str) -> None:
    test = run(http(f"{base_url}/json", test={"expr": "json.missing == 1"}))
    assert (test.status, test.code) == ("error", 200)
    assert test.message == "CEL expression failed: no such member in mapping: 'missing'"
    shown = run(http(f"{base_url}/json", display={"expr": "json.missing"}))
    assert (shown.status, shown.code) == ("error", 200)
    assert shown.message == "display: CEL expression failed: no such member in mapping: 'missing'"


def test_a_working_display_still_follows_the_failures_and_the_error(base_url: str) -> None:
    check = http(
        f"{base_url}/maintenance", test={"expr": "json.status == 'ok'"}, display={"expr": "'down'"}
    )
    outcome = run(check)
    assert outcome.status == "fail"
    assert outcome.message == (
        "status code 503 is not 2xx; CEL expression failed: "
        "no such member in mapping: 'status' (down)"
    )


def test_tcp_icmp_and_grpc_rules_weigh_a_broken_expression_the_same_way() -> None:
    check = {"name": "port", "test": {"expr": "elapsed.nope"}, "display": {"expr": "'shown'"}}
    failures = ["took 12.0ms, over thresholdMillis 5"]
    assert apply_rules(check, failures, {}, {}) == "shown"
    assert failures == [
        "took 12.0ms, over thresholdMillis 5; CEL expression failed: "
        "undeclared reference to 'elapsed' (shown)"
    ]
    with pytest.raises(CelError, match="^CEL expression failed: undeclared reference"):
        apply_rules(check, [], {}, {})
    broken_display = {"name": "port", "display": {"template": "{{.a | upper}}"}}
    failures = ["refused"]
    assert apply_rules(broken_display, failures, {}, {}) is None
    assert failures == [
        "refused",
        "display: not supported: Go template function 'upper' (only toJSON and toJSONPretty "
        "are evaluated here)",
    ]


# A run cut short after the head arrived says so: its status, its phases and where it was.


def test_a_body_that_stalls_after_the_head_times_out_with_the_status(base_url: str) -> None:
    outcome = run(http(f"{base_url}/cut/stall", timeout_ms=300))
    assert (outcome.status, outcome.code) == ("error", 200)
    assert outcome.message == "timed out after 300ms reading the body (status 200 received)"
    assert outcome.phases is not None
    assert {"connect_ms", "first_byte_ms", "total_ms"} <= set(outcome.phases)
    assert outcome.phases["first_byte_ms"] < 300 <= outcome.phases["total_ms"]
    row = result_row("default/web@eu-1", "web", outcome)
    assert row.code == 200 and row.phases is not None and row.phases.first_byte_ms is not None


def test_a_body_cut_short_or_too_large_keeps_the_status_and_phases(base_url: str) -> None:
    closed = run(http(f"{base_url}/cut/close"))
    assert (closed.status, closed.code) == ("error", 200)
    assert (closed.message or "").startswith("RemoteProtocolError: the server closed")
    assert closed.phases is not None and "first_byte_ms" in closed.phases
    large = run(http(f"{base_url}/text"), ResponseLimits(max_body_bytes=4))
    assert (large.status, large.code) == ("error", 200)
    assert large.message == (
        "ResponseTooLarge: the response body is larger than 4 bytes "
        "(limit: --max-response-body-bytes)"
    )
    assert large.phases is not None and "first_byte_ms" in large.phases


def test_a_server_that_never_answers_has_no_status(base_url: str) -> None:
    outcome = run(http(f"{base_url}/hang", timeout_ms=200))
    assert (outcome.status, outcome.code, outcome.message) == (
        "error",
        None,
        "timed out after 200ms",
    )
    assert outcome.phases is not None and "first_byte_ms" not in outcome.phases
    assert "connect_ms" in outcome.phases  # it connected: the server took the request


def test_an_error_while_following_a_redirect_names_the_redirect(
    base_url: str, closed_port: int
) -> None:
    target = f"http://127.0.0.1:{closed_port}/health"
    outcome = run(http(f"{base_url}/elsewhere?to={target}"))
    assert (outcome.status, outcome.code) == ("error", None)
    assert (outcome.message or "").startswith("ConnectError: ")
    assert (outcome.message or "").endswith(f" (following redirect 1 to {target!r})")


# The JSON body is parsed only for an expression that reads it, and any body is judged.


def test_a_body_too_deep_to_parse_is_read_only_by_expressions_that_want_json(
    base_url: str,
) -> None:
    assert run(http(f"{base_url}/deep")).status == "pass"
    assert run(http(f"{base_url}/deep", test={"expr": "code == 200"})).status == "pass"
    # canary-checker gives `{}` for a body its parser refuses (Go's stops at 10,000 levels).
    assert run(http(f"{base_url}/deep", test={"expr": "json == {}"})).status == "pass"
    assert run(http(f"{base_url}/deep", display={"template": "{{.json}}"})).message == "{}"


def test_an_integer_beyond_64_bits_is_a_double_as_in_canary_checker(base_url: str) -> None:
    for expr in ("json.status == 'ok'", "json.id > 9.9e22 && type(json.id) == double"):
        outcome = run(http(f"{base_url}/big-number", test={"expr": expr}))
        assert (outcome.status, outcome.message) == ("pass", None), expr


def test_a_body_cel_cannot_hold_is_an_expression_error_naming_why() -> None:
    from agent.expressions.celvars import json_value

    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(CelError, match="^CEL cannot read the JSON body: it is nested too deeply$"):
        json_value(deep)
    with pytest.raises(CelError, match="an integer too large for a double"):
        json_value({"n": 10**400})


# maxRedirects applies while following; a redirect the agent cannot follow fails.


def test_max_redirects_stops_a_redirect_loop_one_past_the_limit(base_url: str) -> None:
    LOOPS.clear()
    outcome = run(http(f"{base_url}/loop", maxRedirects=3))
    assert (outcome.status, outcome.code) == ("fail", 302)
    assert outcome.message == (
        "status code 302 is not 2xx; followed 4 redirects, more than maxRedirects 3"
    )
    assert len(LOOPS) == 5  # the request and 4 redirects, not httpx's 21


def test_a_redirect_loop_without_max_redirects_fails(base_url: str) -> None:
    outcome = run(http(f"{base_url}/loop"))
    assert (outcome.status, outcome.code) == ("fail", 302)
    assert (outcome.message or "").endswith(
        "; followed 21 redirects, more than the 20 followed without maxRedirects"
    )


def test_max_redirects_above_twenty_is_the_limit(base_url: str) -> None:
    many = run(
        http(f"{base_url}/redirects/24", maxRedirects=30, test={"expr": "json.status == 'ok'"})
    )
    assert (many.status, many.code, many.message) == ("pass", 200, None)
    within = run(http(f"{base_url}/redirects/2", maxRedirects=3))
    assert within.status == "pass"
    over = run(http(f"{base_url}/redirects/3", maxRedirects=3))
    assert (over.status, over.code, over.message) == (
        "fail",
        200,
        "followed 4 redirects, more than maxRedirects 3",
    )


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("ftp://127.0.0.1/x", "ftp://127.0.0.1/x"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("ftp://user:secret@127.0.0.1/x?token=t", "ftp://127.0.0.1/x?…"),
    ],
)
def test_a_redirect_that_is_not_http_fails_saying_so(
    base_url: str, location: str, shown: str
) -> None:
    outcome = run(http(f"{base_url}/elsewhere?to={quote(location)}"))
    assert (outcome.status, outcome.code) == ("fail", 302)
    assert outcome.message == (
        f"status code 302 is not 2xx; redirected to {shown!r}, which is not http(s)"
    )
    accepted = run(http(f"{base_url}/elsewhere?to={quote(location)}", responseCodes=[302]))
    assert accepted.message == f"redirected to {shown!r}, which is not http(s)"


def test_max_ssl_expiry_zero_is_no_limit_as_in_canary_checker(base_url: str) -> None:
    """canary-checker checks the certificate only `if check.MaxSSLExpiry > 0`."""
    assert run(http(f"{base_url}/json", maxSSLExpiry=0)).status == "pass"
    assert run(http(f"{base_url}/json", maxSSLExpiry=1)).message == (
        "no certificate found to check its expiry (maxSSLExpiry)"
    )
