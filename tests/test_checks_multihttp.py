"""multihttp checks against a real HTTP server on 127.0.0.1: a login flow passing a token and
a cookie between steps, each assertion type, and failures that name the step."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.checks import CheckOutcome, ClientPool, result_row, run_check
from agent.checks.multihttp_check import shown_url
from reconciler.core.agentconfig import agent_configs
from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import LoadResult, load_config
from tests import httpd
from tests.conftest import ConfigRepo, region_doc
from tests.inprocess import running_in_process
from tests.server import wait_for

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TOKEN = "t-0123456789"


class Shop(BaseHTTPRequestHandler):
    """POST /login gives a token and a session cookie; /orders needs both."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, document: object, **headers: str) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        sent = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/login" and sent.get("password") == "s3cret":
            self.reply(200, {"token": TOKEN}, Set_Cookie="session=abc; Path=/", X_Request="r-7")
        else:
            self.reply(401, {"error": "bad credentials"})

    def do_GET(self) -> None:
        authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        has_session = "session=abc" in (self.headers.get("Cookie") or "")
        if not (authorized and has_session):
            self.reply(403, {"error": "who are you?"})
        elif self.path == "/orders":
            self.reply(200, {"orders": [{"id": 42, "state": "paid"}, {"id": 43, "state": "new"}]})
        elif self.path == "/slow":
            threading.Event().wait(0.05)  # the server answers no sooner than 50 ms
            self.reply(200, {"slow": True})
        elif self.path == "/orders/42":
            self.reply(200, {"id": 42, "state": "paid", "request": self.headers.get("X-Trace")})
        else:
            self.reply(404, {"error": "no such order"})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with httpd.serving(Shop) as server:
        yield httpd.url(server)


def _run(check: dict[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def flow(base: str, password: str = "s3cret", **fields: Any) -> dict[str, Any]:
    return {
        "name": "checkout",
        "type": "multihttp",
        "timeout_ms": 5000,
        "entries": [
            {
                "request": {
                    "method": "POST",
                    "url": f"{base}/login",
                    "headers": [{"name": "Content-Type", "value": "application/json"}],
                    "body": json.dumps({"user": "canary", "password": password}),
                },
                "assertions": [
                    {"type": "TEXT", "subject": "HTTP_STATUS_CODE", "condition": "EQUALS",
                     "value": "200"},
                ],
                "variables": [
                    {"name": "token", "type": "JSON_PATH", "expression": "$.token"},
                    {"name": "request", "type": "HEADER", "expression": "x-request"},
                ],
            },
            {
                "request": {
                    "url": f"{base}/orders",
                    "headers": [{"name": "Authorization", "value": "Bearer ${token}"}],
                },
                "assertions": [
                    {"type": "JSON_PATH_ASSERTION", "expression": "$.orders[0].id"},
                    {"type": "JSON_PATH_VALUE", "expression": "$.orders[*].state",
                     "condition": "EQUALS", "value": "new"},
                    {"type": "TEXT", "subject": "RESPONSE_HEADERS", "condition": "CONTAINS",
                     "value": "content-type: application/json"},
                ],
                "variables": [
                    {"name": "order", "type": "REGEX", "expression": r'"id": (\d+)'},
                ],
            },
            {
                "request": {
                    "url": f"{base}/orders/${{order}}",
                    "headers": [
                        {"name": "Authorization", "value": "Bearer ${token}"},
                        {"name": "X-Trace", "value": "${request}"},
                    ],
                },
                "assertions": [
                    {"type": "REGEX_ASSERTION", "subject": "RESPONSE_BODY",
                     "expression": r'"state": "(paid|shipped)"'},
                    {"type": "JSON_PATH_VALUE", "expression": "$.request",
                     "condition": "EQUALS", "value": "r-7"},
                ],
            },
        ],
        **fields,
    }  # fmt: skip


def test_a_login_flow_passes_values_and_cookies_between_steps(base_url: str) -> None:
    outcome = _run(flow(base_url))
    assert outcome.status == "pass", outcome.message
    assert outcome.code == 200
    message = outcome.message or ""
    assert message.startswith(f"3 steps: 1 POST {base_url}/login 200 ")
    assert f"; 2 GET {base_url}/orders 200 " in message
    assert f"; 3 GET {base_url}/orders/42 200 " in message
    assert outcome.phases is not None and len(outcome.phases["steps_ms"]) == 3
    row = result_row("c@a", "checkout", outcome)
    assert row.phases is not None and row.phases.steps_ms is not None
    assert len(row.phases.steps_ms) == 3
    assert row.phases.total_ms is not None and row.phases.total_ms >= sum(row.phases.steps_ms)


def test_a_failed_assertion_names_the_step_and_stops_the_flow(base_url: str) -> None:
    outcome = _run(flow(base_url, password="wrong"))
    assert outcome.status == "fail"
    assert outcome.code == 401
    message = outcome.message or ""
    assert message.startswith(
        f"step 1 (POST {base_url}/login): assertion 1 (TEXT HTTP_STATUS_CODE EQUALS '200') "
        "failed: found '401'; variable token captured nothing ('$.token'); "
        "variable request captured nothing ('x-request') (steps 2-3 not run) "
        f"[1 POST {base_url}/login 401 "
    )
    assert message.endswith("ms]")
    assert outcome.phases is not None and len(outcome.phases["steps_ms"]) == 1


def test_a_json_path_value_that_differs_shows_what_was_found(base_url: str) -> None:
    check = flow(base_url)
    check["entries"][2]["assertions"] = [
        {"type": "JSON_PATH_VALUE", "expression": "$.state", "condition": "EQUALS",
         "value": "refunded"},
    ]  # fmt: skip
    outcome = _run(check)
    assert outcome.status == "fail"
    assert (outcome.message or "").startswith(
        f"step 3 (GET {base_url}/orders/${{order}}): assertion 1 (JSON_PATH_VALUE '$.state' "
        "EQUALS 'refunded') failed: found 'paid' [1 POST "
    )


def test_a_flow_slower_than_threshold_millis_fails(base_url: str) -> None:
    check = flow(base_url, thresholdMillis=30)
    check["entries"][2]["request"]["url"] = f"{base_url}/slow"
    check["entries"][2]["assertions"] = []
    outcome = _run(check)
    assert outcome.status == "fail"
    assert outcome.phases is not None and outcome.phases["steps_ms"][2] >= 50
    assert "over thresholdMillis 30" in (outcome.message or "")


def test_an_unreachable_step_fails_naming_it(base_url: str) -> None:
    check = flow(base_url)
    check["entries"][1]["request"]["url"] = "http://127.0.0.1:9/orders"
    outcome = _run(check)
    assert outcome.status == "fail"
    assert (outcome.message or "").startswith(
        "step 2 (GET http://127.0.0.1:9/orders): request failed: ConnectError: "
    )


# --- from the config repo to the agent -----------------------------------------------------

CANARY = """\
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: shop
spec:
  schedule: '@every 1m'
  multihttp:
    - name: checkout
      entries:
        - request:
            method: POST
            url: BASE/login
            headers:
              - name: X-Client
                valueFrom: {env: SHOP_CLIENT}
            body: '{"password": "${env:SHOP_PASSWORD}"}'
          assertions:
            - {type: TEXT, subject: HTTP_STATUS_CODE, condition: EQUALS, value: "200"}
          variables:
            - {name: token, type: JSON_PATH, expression: $.token}
        - request:
            url: BASE/orders
            headers:
              - {name: Authorization, value: "Bearer ${token}"}
          assertions:
            - type: JSON_PATH_VALUE
              expression: "$.orders[0].state"
              condition: EQUALS
              value: paid
"""


def _load(text: str) -> LoadResult:
    return load_config([SourceFile("canary.yaml", "sha-" + str(hash(text)), text.encode)])


def _errors(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity == "error"]


def test_secrets_are_resolved_by_the_control_plane_and_the_flow_runs(base_url: str) -> None:
    result = _load(CANARY.replace("BASE", base_url))
    assert result.ok, _errors(result)
    resources = compile_config(result.config).resources.values()
    environment = {"SHOP_PASSWORD": "s3cret", "SHOP_CLIENT": "canary"}
    config = agent_configs(resources, environment)["local"]
    assert not config.problems, config.problems
    (check,) = orjson.loads(config.body)["canaries"][0]["checks"]
    login = check["entries"][0]["request"]
    assert login["body"] == '{"password": "s3cret"}'
    assert login["headers"] == [{"name": "X-Client", "value": "canary"}]
    # Captured variables are the agent's business: the control plane leaves them alone.
    assert check["entries"][1]["request"]["headers"][0]["value"] == "Bearer ${token}"
    outcome = _run(check)
    assert outcome.status == "pass", outcome.message

    missing = agent_configs(resources, {"SHOP_CLIENT": "canary"})["local"]
    assert (
        missing.problems
        and "environment variable SHOP_PASSWORD is not set" in (missing.problems[0])
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("Bearer ${token}", "Bearer ${tokn}"),
            "spec.multihttp[0].entries[1].request.headers[0].value: ${tokn} is not a variable of "
            "an earlier entry",
        ),
        (
            ("$.token}", "$..token}"),
            "spec.multihttp[0].entries[0].variables[0].expression: '$..token' is not a supported "
            "JSON path (expected $ followed by .key, ['key'], [index], [*] or .*)",
        ),
        (
            ("type: JSON_PATH,", "type: CSS_SELECTOR,"),
            "spec.multihttp[0].entries[0].variables[0].type: not supported: CSS_SELECTOR (use "
            "JSON_PATH, REGEX or HEADER)",
        ),
        (
            ("              condition: EQUALS\n", ""),
            "spec.multihttp[0].entries[1].assertions[0].condition: a JSON_PATH_VALUE assertion "
            "needs 'condition'",
        ),
    ],
)
def test_a_broken_flow_is_refused_at_its_line(edit: tuple[str, str], message: str) -> None:
    result = _load(CANARY.replace("BASE", "http://shop.test").replace(*edit))
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].endswith(message), errors
    assert errors[0].startswith("canary.yaml:")


def test_more_than_ten_entries_are_refused() -> None:
    entry = "        - request: {url: 'http://shop.test/'}\n"
    text = CANARY.split("      entries:\n")[0] + "      entries:\n" + entry * 11
    errors = _errors(_load(text))
    assert len(errors) == 1 and "spec.multihttp[0].entries" in errors[0], errors
    assert "at most 10" in errors[0]


def test_a_local_flow_and_ping_land_in_the_state_with_their_phases(
    config_repo: ConfigRepo, tmp_path: Path, base_url: str
) -> None:
    config_repo.write("regions.yaml", region_doc("default"))
    canary = CANARY.replace("BASE", base_url).replace("'@every 1m'", "'@every 1s'")
    canary = canary.replace("valueFrom: {env: SHOP_CLIENT}", "value: canary")
    canary += "  icmp:\n    - name: loopback\n      endpoint: 127.0.0.1\n      interval: 10ms\n"
    config_repo.write("canaries/shop.yaml", canary)
    config_repo.commit("flow and ping")
    environment = {"SHOP_PASSWORD": "s3cret"}
    with running_in_process(config_repo.path, tmp_path / "state.duckdb", env=environment) as server:
        server.wait_ready()

        def results() -> list[dict[str, Any]]:
            response = server.client.get("/api/v1/targets/default.shop/results")
            rows: list[dict[str, Any]] = response.json()["results"]
            return rows

        wait_for(lambda: {r["check"] for r in results()} >= {"checkout", "loopback"}, 20, "rows")
        rows = results()
    flow_row = next(r for r in rows if r["check"] == "checkout")
    assert (flow_row["status"], flow_row["code"]) == ("pass", 200), flow_row["message"]
    assert len(flow_row["phases"]["steps_ms"]) == 2
    ping = next(r for r in rows if r["check"] == "loopback")
    if ping["status"] == "error":
        pytest.skip(f"no ICMP socket here: {ping['message']}")
    assert ping["phases"]["packets_sent"] == ping["phases"]["packets_received"] == 3
    assert ping["phases"]["rtt_avg_ms"] >= 0


def test_a_step_without_a_response_in_time_is_an_error_naming_it(base_url: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        check = flow(base_url, timeout_ms=300)
        check["entries"][1]["request"]["url"] = f"http://127.0.0.1:{port}/orders"
        outcome = _run(check)
    assert outcome.status == "error"
    assert (outcome.message or "").startswith(
        f"step 2 (GET http://127.0.0.1:{port}/orders): timed out after "
    )
    assert outcome.phases is not None and len(outcome.phases["steps_ms"]) == 1


def test_results_show_urls_without_credentials_or_query() -> None:
    assert shown_url("https://user:pw@shop.test/api/login?key=s3cret") == (
        "https://shop.test/api/login?…"
    )
    assert shown_url("http://shop.test/orders/${order}") == "http://shop.test/orders/${order}"
