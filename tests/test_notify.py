"""Notification webhooks: signed JSON or Slack text, retried until the hook takes them."""

from __future__ import annotations

import asyncio
import http.server
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agent.metrics import Metrics
from reconciler.core.notifications import plain_summary, summary
from reconciler.server.notify import SIGNATURE_HEADER, Hook, Notifier, parse_hooks, sign
from tests import httpd


class Receiver:
    """A webhook endpoint on 127.0.0.1 that fails its first `failures` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server, "/hook")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(failures=2)
    yield hook
    httpd.stop(hook.server)


def _deliver(hooks: list[Hook], events: list[dict[str, Any]], metrics: Metrics) -> None:
    async def scenario() -> None:
        notifier = Notifier(hooks, "s3cret", metrics, lambda: datetime.now(UTC), first_delay=0.01)
        notifier.start()
        for event in events:
            notifier.send(event)
        await notifier.stop(wait_seconds=10)

    asyncio.run(scenario())


def test_events_are_signed_retried_and_delivered_in_order(receiver: Receiver) -> None:
    metrics = Metrics()
    events = [
        {"type": "incident_opened", "canary": "web/home", "regions_down": ["eu", "us"]},
        {"type": "incident_resolved", "canary": "web/home"},
    ]
    _deliver([Hook(receiver.url)], events, metrics)

    assert [orjson.loads(body)["type"] for _, body in receiver.received] == [
        "incident_opened",
        "incident_resolved",
    ]
    for headers, body in receiver.received:
        assert headers[SIGNATURE_HEADER] == sign("s3cret", body)
    assert 'reconciler_notifications_total{outcome="delivered"} 2' in metrics.render()


def test_slack_hooks_get_a_text_message(receiver: Receiver) -> None:
    receiver.failures = 0
    event = {"type": "canary_rolled_back", "route": "checkout", "reason": "error rate 7% > 5%"}
    _deliver(parse_hooks(f"slack+{receiver.url}"), [event], Metrics())
    [(_, body)] = receiver.received
    assert orjson.loads(body) == {
        "text": ":rewind: Canary on route checkout rolled back: error rate 7% > 5%"
    }


def test_parse_hooks() -> None:
    assert parse_hooks("http://a/x, slack+https://b/y,,") == [
        Hook("http://a/x"),
        Hook("https://b/y", "slack"),
    ]
    assert parse_hooks(None) == []


def test_a_resolve_names_the_regions_still_down() -> None:
    resolved = {"type": "incident_resolved", "canary": "default/web", "policy": "majority"}
    assert summary({**resolved, "regions_down": []}) == (
        ":large_green_circle: Incident resolved for default/web"
    )
    assert summary({**resolved, "regions_down": ["ap", "us"]}) == (
        ":large_green_circle: Incident resolved for default/web "
        "(policy majority no longer holds; still down: ap, us)"
    )
    # The same line reaches PagerDuty, Opsgenie and email, without the emoji.
    assert plain_summary({**resolved, "policy": "all", "regions_down": ["us"]}) == (
        "Incident resolved for default/web (policy all no longer holds; still down: us)"
    )
