"""Routed deliveries to real local receivers: HTTP servers shaped as PagerDuty's Events API v2
and Opsgenie's Alert API (checking the bodies those APIs require), a signed webhook, and an
SMTP server that receives a real email; reminders while an incident stays open."""

from __future__ import annotations

import http.server
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from agent.metrics import Metrics
from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile, git_blob_sha
from reconciler.core.load import load_config
from reconciler.core.resources import Resource
from reconciler.core.routing import Notification
from reconciler.server.notify import SIGNATURE_HEADER, Notifications, sign
from tests import httpd
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

PD_KEY = "R0UT1NGK3YR0UT1NGK3YR0UT1NGK3Y12"  # 32 characters, as PagerDuty's
OG_KEY = "0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f"
PD_SEVERITIES = {"critical", "error", "warning", "info"}


class FakeApi:
    """An HTTP server on 127.0.0.1 answering like PagerDuty or Opsgenie, validating bodies."""

    def __init__(self, answer: Any) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.errors: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = orjson.loads(raw) if raw else None
                api.requests.append((self.path, dict(self.headers), body))
                status, document = answer(self.path, self.headers, body)
                if status >= 400:
                    api.errors.append(str(document))
                payload = orjson.dumps(document)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server)

    def bodies(self, path: str) -> list[Any]:
        return [body for p, _, body in self.requests if p == path]


def pagerduty(path: str, headers: Any, body: Any) -> tuple[int, Any]:
    """Events API v2: `POST /v2/enqueue`, 202 on a valid event, 400 naming what is wrong."""
    if path != "/v2/enqueue":
        return 404, {"status": "not found"}
    problems = []
    if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
        problems.append("routing_key must be a 32 character string")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append("event_action is invalid")
    dedup = body.get("dedup_key")
    if action != "trigger" and not dedup:
        problems.append("dedup_key is required for acknowledge and resolve")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        problems.append("dedup_key must be at most 255 characters")
    if action == "trigger":
        payload = body.get("payload") or {}
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            problems.append("payload.summary is required, at most 1024 characters")
        if not payload.get("source"):
            problems.append("payload.source is required")
        if any(value is None for value in payload.values()):
            problems.append("payload fields may not be null")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append("payload.severity must be critical, error, warning or info")
    if problems:
        return 400, {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": problems,
        }
    return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup}


class Opsgenie:
    """Alert API: create (`POST /v2/alerts`) and close by alias; `Authorization: GenieKey`."""

    def __init__(self) -> None:
        self.open: dict[str, dict[str, Any]] = {}
        self.closed: list[str] = []

    def __call__(self, path: str, headers: Any, body: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"GenieKey {OG_KEY}":
            return 401, {"message": "Could not authenticate", "took": 0.0}
        answer = {
            "result": "Request will be processed",
            "took": 0.01,
            "requestId": str(uuid.uuid4()),
        }
        if path == "/v2/alerts":
            message = body.get("message")
            if not isinstance(message, str) or not 0 < len(message) <= 130:
                return 422, {"message": "message is required, at most 130 characters"}
            if len(body.get("alias", "")) > 512 or body.get("priority") not in (
                "P1", "P2", "P3", "P4", "P5",
            ):  # fmt: skip
                return 422, {"message": "alias or priority invalid"}
            if not all(isinstance(v, str) for v in body.get("details", {}).values()):
                return 422, {"message": "details must map strings to strings"}
            self.open[body["alias"]] = body
            return 202, answer
        found = re.fullmatch(r"/v2/alerts/([^/?]+)/close\?identifierType=alias", path)
        if found:
            self.closed.append(found.group(1))
            self.open.pop(found.group(1), None)
            return 202, answer
        return 404, {"message": "not found"}


class Mailbox:
    """aiosmtpd's handler: keeps every message received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def resources_of(text: str) -> dict[str, Resource]:
    content = text.encode()
    files = [SourceFile("alerting.yaml", git_blob_sha(content), lambda: content)]
    loaded = load_config(files)
    assert not [d for d in loaded.diagnostics if d.severity == "error"], loaded.diagnostics
    return compile_config(loaded.config).resources


@pytest.fixture
async def notifications() -> AsyncIterator[Any]:
    started: list[Notifications] = []

    def make(environ: Mapping[str, str]) -> Notifications:
        notes = Notifications(
            [], None, Metrics(), lambda: datetime.now(UTC), environ, first_delay=0.01
        )
        notes.start()
        started.append(notes)
        return notes

    yield make
    for notes in started:
        await notes.stop(wait_seconds=5)


def opened(incident: int, canary: str = "shop/checkout") -> dict[str, Any]:
    return {
        "type": "incident_opened",
        "incident": incident,
        "canary": canary,
        "namespace": canary.split("/")[0],
        "severity": "critical",
        "labels": {"team": "payments"},
        "regions_down": ["eu-west"],
        "reason": "down in 1 of 1 regions",
    }


def resolved(incident: int, canary: str = "shop/checkout") -> dict[str, Any]:
    # As the incident controller sends it: the canary's labels on the resolve too.
    return {
        "type": "incident_resolved",
        "incident": incident,
        "canary": canary,
        "namespace": canary.split("/")[0],
        "severity": "critical",
        "labels": {"team": "payments"},
    }


async def test_pagerduty_triggers_then_resolves_with_one_dedup_key(notifications: Any) -> None:
    api = FakeApi(pagerduty)
    notes = notifications({"PD_KEY": PD_KEY})
    notes.configure(
        resources_of(
            f"""
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: oncall}}
spec:
  pagerduty: {{routing_key_from: {{env: PD_KEY}}, url: "{api.url}"}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec: {{receiver: oncall, group_wait: 0s, group_interval: 0s}}
"""
        )
    )
    notes.send(opened(12))
    await eventually(lambda: len(api.requests) == 1, 10, "the trigger")
    notes.send(resolved(12))
    await eventually(lambda: len(api.requests) == 2, 10, "the resolve")
    assert api.errors == []
    trigger, resolve = api.bodies("/v2/enqueue")
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "canary-reconciler/incident-12"
    assert trigger["routing_key"] == PD_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert "shop/checkout" in trigger["payload"]["summary"]
    await eventually(lambda: len(notes.recent) == 2, 10, "two deliveries recorded")
    assert [d.status for d in notes.recent] == ["delivered", "delivered"]


async def test_opsgenie_creates_with_an_alias_and_closes_by_it(notifications: Any) -> None:
    opsgenie = Opsgenie()
    api = FakeApi(opsgenie)
    notes = notifications({"OG_KEY": OG_KEY})
    notes.configure(
        resources_of(
            f"""
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: payments}}
spec:
  opsgenie: {{api_key_from: {{env: OG_KEY}}, url: "{api.url}", tags: [payments]}}
---
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: nobody}}
spec:
  webhook: {{url: "http://127.0.0.1:9/never"}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec:
  receiver: nobody
  group_wait: 0s
  group_interval: 0s
  routes:
    - receiver: payments
      matchers: ['team="payments"', 'event=~"incident_.*"']
"""
        )
    )
    notes.send(opened(3))
    await eventually(lambda: "incident-3" in opsgenie.open, 10, "the alert created")
    alert = opsgenie.open["incident-3"]
    assert alert["priority"] == "P1" and "payments" in alert["tags"]
    notes.send(resolved(3))
    await eventually(lambda: opsgenie.closed == ["incident-3"], 10, "the alert closed")
    assert opsgenie.open == {} and api.errors == []


async def test_email_arrives_at_a_real_smtp_server(
    notifications: Any, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    notes = notifications({})
    notes.configure(
        resources_of(
            f"""
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: team}}
spec:
  email:
    to: [oncall@example.com, lead@example.com]
    from: reconciler@example.com
    smarthost: "127.0.0.1:{port}"
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec: {{receiver: team, group_wait: 0s}}
"""
        )
    )
    notes.send(opened(5))
    await eventually(lambda: len(box.messages) == 1, 10, "the email")
    message = box.messages[0]
    assert box.envelopes[0] == (
        "reconciler@example.com",
        ["oncall@example.com", "lead@example.com"],
    )
    assert message["Subject"].startswith("[FIRING:1] Incident opened for shop/checkout")
    assert "regions_down: ['eu-west']" in message.get_payload()
    await eventually(lambda: len(notes.recent) == 1, 10, "the delivery recorded")
    assert notes.recent[0].status == "delivered" and notes.recent[0].integration == "email"


class Webhook:
    """A routed webhook endpoint that records signed bodies."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                hook.bodies.append(
                    (dict(self.headers), self.rfile.read(int(self.headers["Content-Length"])))
                )
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server, "/hook")


async def test_a_reminder_is_sent_while_the_incident_stays_open(notifications: Any) -> None:
    hook = Webhook()
    notes = notifications({"HOOK_SECRET": "s3cret"})
    notes.configure(
        resources_of(
            f"""
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: chat}}
spec:
  webhook: {{url: "{hook.url}", secret_from: {{env: HOOK_SECRET}}}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec: {{receiver: chat, group_wait: 0s, group_interval: 0s, repeat_interval: 300ms}}
"""
        )
    )
    notes.send(opened(9))
    await eventually(lambda: len(hook.bodies) >= 3, 10, "the first notice and two reminders")
    documents = [orjson.loads(body) for _, body in hook.bodies[:3]]
    assert [d["reminder"] for d in documents] == [False, True, True]
    assert all(d["status"] == "firing" and d["firing"][0]["incident"] == 9 for d in documents)
    headers, body = hook.bodies[0]
    assert headers[SIGNATURE_HEADER] == sign("s3cret", body)
    notes.send(resolved(9))
    await eventually(
        lambda: orjson.loads(hook.bodies[-1][1])["status"] == "resolved", 10, "the resolve"
    )
    count = len(hook.bodies)
    # Resolved: no more reminders. Wait for the dispatcher to have nothing due, not for time.
    await eventually(
        lambda: notes._dispatcher is not None and notes._dispatcher.next_due() is None, 5, "idle"
    )
    assert len(hook.bodies) == count


async def test_a_missing_secret_fails_deliveries_with_its_name(notifications: Any) -> None:
    notes = notifications({})
    notes.configure(
        resources_of(
            """
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {name: oncall}
spec:
  pagerduty: {routing_key_from: {env: PD_ROUTING_KEY}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {name: default}
spec: {receiver: oncall, group_wait: 0s}
"""
        )
    )
    assert notes.problems == [
        "Receiver oncall: spec.pagerduty.routing_key_from: environment variable "
        "PD_ROUTING_KEY is not set on the server"
    ]
    notes.send(opened(1))
    await eventually(lambda: len(notes.recent) == 1, 10, "the failed delivery")
    assert notes.recent[0].status == "failed" and "PD_ROUTING_KEY" in (notes.recent[0].error or "")


async def test_held_reminders_are_skipped_and_resume_when_released(notifications: Any) -> None:
    hook = Webhook()
    notes = notifications({})
    held: list[Notification] = []
    holding = [True]

    def hold(reminder: Notification) -> bool:
        held.append(reminder)
        return holding[0]

    notes.hold_reminders(hold)
    notes.configure(
        resources_of(
            f"""
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: chat}}
spec:
  webhook: {{url: "{hook.url}"}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec: {{receiver: chat, group_wait: 0s, group_interval: 0s, repeat_interval: 200ms}}
"""
        )
    )
    notes.send(opened(11))
    await eventually(lambda: len(held) >= 2, 10, "two reminders due and held")
    assert [orjson.loads(body)["reminder"] for _, body in hook.bodies] == [False]
    holding[0] = False
    await eventually(lambda: len(hook.bodies) >= 2, 10, "a reminder once released")
    assert orjson.loads(hook.bodies[-1][1])["reminder"] is True
