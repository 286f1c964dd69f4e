"""HTTP checks against a real HTTP server on 127.0.0.1: codes, latency, CEL, redirects, phases."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.checks import CheckOutcome, ClientPool, result_row, run_check
from tests import httpd

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RELEASE = threading.Event()


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


def run(check: Mapping[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=2, trust_env=False) as pool:
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
