"""No secret of a notification receiver reaches a log line, `/api/v1/notifications` or the
state file: not a Slack URL's token in httpx's request lines or the retry warnings, not a key
a receiver echoes in its error answer."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.metrics import Metrics
from reconciler.server.notify import Hook, Notifier
from tests import httpd
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import running_server, wait_for

SLACK_TOKEN = "R0UTEDSLACKT0KEN0123456789"
PD_KEY = "PDR0UT1NGK3YPDR0UT1NGK3Y012345"
HOOK_TOKEN = "LEGACYSLACKT0KEN0123456789"
READ_TOKEN = "secrets-read-token"

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata: {name: web, namespace: default}
spec:
  schedule: '@every 1m'
  agentSelector: ['eu-1']
  incidentPolicy: any
  failureThreshold: 2
  http:
    - name: home
      url: https://example.com/
"""

ALERTING = """
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: chat}}
spec:
  slack: {{url_from: {{env: SLACK_URL}}}}
---
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: oncall}}
spec:
  pagerduty: {{routing_key_from: {{env: PD_KEY}}, url: "{url}"}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec:
  receiver: chat
  group_wait: 0s
  routes:
    - receiver: chat
      matchers: ['severity="critical"']
      continue: true
    - receiver: oncall
      matchers: ['severity="critical"']
"""


class Echo:
    """A receiver that refuses everything with a 400 whose body repeats what it was sent:
    the request's path (a Slack token) and its body (a PagerDuty routing key)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        echo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                echo.paths.append(self.path)
                answer = f"invalid_token: {self.path} {body.decode()[:80]}".encode()
                httpd.reply(self, 400, answer, "text/plain")

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server)


@pytest.fixture
def echo() -> Iterator[Echo]:
    receiver = Echo()
    yield receiver
    httpd.stop(receiver.server)


def test_receiver_secrets_are_never_logged_listed_or_stored(tmp_path: Path, echo: Echo) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.write("canaries/web.yaml", CANARY)
    repo.write("alerting.yaml", ALERTING.format(url=echo.url))
    repo.commit("initial")
    env = {
        "SLACK_URL": f"{echo.url}/services/T1/B1/{SLACK_TOKEN}",
        "PD_KEY": PD_KEY,
        "RECONCILER_READ_TOKEN": READ_TOKEN,
        "RECONCILER_INCIDENT_INTERVAL": "0.05",
    }
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    with running_server(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        last = datetime.now(UTC)
        rows = [
            {
                "canary": "default/web@eu-1",
                "check": "home",
                "started_at": (last - timedelta(minutes=1 - i)).isoformat(),
                "duration_ms": 10.0,
                "status": "fail",
                "code": 503,
            }
            for i in range(2)
        ]
        response = server.client.post(
            "/api/agent/results",
            headers={"Authorization": f"Bearer {server.token('eu-1')}"},
            content=json.dumps({"results": rows}),
        )
        assert response.status_code == 200, response.text

        def deliveries() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = server.client.get(
                "/api/v1/notifications", headers=read
            ).json()["deliveries"]
            return found

        wait_for(lambda: len(deliveries()) == 2, 20, "both deliveries to fail")
        listed = {d["receiver"]: d for d in deliveries()}
        assert {r: d["status"] for r, d in listed.items()} == {"chat": "failed", "oncall": "failed"}
        # The receiver's answer is still shown, its secrets cut out.
        assert listed["chat"]["error"].startswith("HTTP 400: invalid_token: <redacted>")
        assert "<redacted>" in listed["oncall"]["error"]
        assert {p.rsplit("/", 1)[-1] for p in echo.paths} == {SLACK_TOKEN, "enqueue"}
        shown = json.dumps(deliveries()) + json.dumps(server.status())
    log = server.log.read_text()
    # httpx's line per request is kept, naming the host only.
    assert f'HTTP Request: POST {echo.url} \\"HTTP/1.0 400 Bad Request\\"' in log
    for secret in (SLACK_TOKEN, PD_KEY, "/services/T1"):
        assert secret not in log
        assert secret not in shown
    # The state file keeps the deliveries as listed.
    with running_server(repo.path, tmp_path / "state.duckdb", env) as again:
        again.wait_ready()
        stored = again.client.get("/api/v1/notifications", headers=read).text
        assert "<redacted>" in stored
        assert SLACK_TOKEN not in stored and PD_KEY not in stored


class Flaky:
    """A `--notify-urls` hook that answers 503 twice, then 204."""

    def __init__(self) -> None:
        self.failures = 2
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if flaky.failures > 0 else 204
                flaky.failures -= 1
                httpd.reply(self, status, b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)


def test_legacy_hooks_name_the_host_only(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    refused = httpd.start(http.server.BaseHTTPRequestHandler)
    dead = httpd.url(refused, f"/services/T2/B2/{HOOK_TOKEN}")
    httpd.stop(refused)  # nothing listens there any more: every attempt is refused
    hooks = [
        Hook(httpd.url(flaky.server, f"/services/T1/B1/{HOOK_TOKEN}"), "slack"),
        Hook(f"{dead}?token={HOOK_TOKEN}", "slack"),
    ]
    recorded: list[tuple[str, str | None]] = []

    async def scenario() -> None:
        notifier = Notifier(
            hooks,
            None,
            Metrics(),
            lambda: datetime.now(UTC),
            attempts=3,
            first_delay=0.01,
            record=lambda url, event, outcome, attempts, error: recorded.append((outcome, error)),
        )
        notifier.start()
        notifier.send({"type": "incident_opened", "canary": "default/web", "regions_down": ["eu"]})
        await notifier.stop(wait_seconds=10)

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(scenario())
    finally:
        httpd.stop(flaky.server)
    assert sorted(outcome for outcome, _ in recorded) == ["delivered", "failed"]
    # httpx's own request lines are cut to the host by the process's log handler
    # (`configure_logging`; the end-to-end test above); here, the hooks' own messages.
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("reconciler"))
    assert f"to 127.0.0.1:{flaky.server.server_address[1]} failed (HTTP 503); retry 1" in text
    assert "gave up on notification incident_opened to 127.0.0.1:" in text
    assert HOOK_TOKEN not in text and "/services/" not in text
    assert all(HOOK_TOKEN not in (error or "") for _, error in recorded)
