"""Alert routing on the server (in process): a real incident routed by the repository's
AlertRouting, `GET /api/v1/notifications` and `/metrics` showing a delivered and a failed
delivery, and the plan showing a routing change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ConfigRepo, agent_doc, region_doc, run_cli
from tests.inprocess import InProcessServer, running_in_process
from tests.server import wait_for
from tests.test_alert_receivers import Webhook

READ_TOKEN = "routing-read-secret"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ENV = {"RECONCILER_INCIDENT_INTERVAL": "0.05", "RECONCILER_READ_TOKEN": READ_TOKEN}

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: checkout
  namespace: shop
  labels: {team: payments}
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
  webhook: {{url: "{url}"}}
---
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: oncall}}
spec:
  pagerduty: {{routing_key_from: {{env: PD_KEY_NOT_SET}}}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec:
  receiver: chat
  group_wait: 0s
  routes:
    - receiver: chat
      matchers: ['{matcher}']
      continue: true
    - receiver: oncall
      matchers: ['severity="critical"']
"""


def make_repo(path: Path, url: str, matcher: str = 'team="payments"') -> ConfigRepo:
    repo = ConfigRepo(path)
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.write("canaries/checkout.yaml", CANARY)
    repo.write("alerting.yaml", ALERTING.format(url=url, matcher=matcher))
    repo.commit("initial")
    return repo


def fail_runs(server: InProcessServer, count: int) -> None:
    last = datetime.now(UTC)
    rows = [
        {
            "canary": "shop/checkout@eu-1",
            "check": "home",
            "started_at": (last - timedelta(minutes=count - 1 - i)).isoformat(),
            "duration_ms": 10.0,
            "status": "fail",
            "code": 503,
        }
        for i in range(count)
    ]
    response = server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {server.token('eu-1')}"},
        content=json.dumps({"results": rows}),
    )
    assert response.status_code == 200, response.text


def deliveries(server: InProcessServer) -> dict[str, Any]:
    response = server.client.get("/api/v1/notifications", headers=READ)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_an_incident_is_routed_and_its_deliveries_are_listed_and_counted(tmp_path: Path) -> None:
    hook = Webhook()
    repo = make_repo(tmp_path / "config", hook.url)
    with running_in_process(repo.path, tmp_path / "state.duckdb", ENV) as server:
        server.wait_ready()
        assert server.client.get("/api/v1/notifications").status_code == 401
        fail_runs(server, 3)
        wait_for(lambda: len(deliveries(server)["deliveries"]) == 2, 10, "two deliveries")
        found = deliveries(server)
        assert found["routed"] is True
        assert found["problems"] == [
            "Receiver oncall: spec.pagerduty.routing_key_from: environment variable "
            "PD_KEY_NOT_SET is not set on the server"
        ]
        by_receiver = {d["receiver"]: d for d in found["deliveries"]}
        assert by_receiver["chat"]["status"] == "delivered"
        assert by_receiver["chat"]["events"] == ["incident_opened"]
        assert by_receiver["chat"]["attempts"] == 1 and by_receiver["chat"]["error"] is None
        assert by_receiver["oncall"]["status"] == "failed"
        assert "PD_KEY_NOT_SET" in by_receiver["oncall"]["error"]
        # The incident event carries what routes match on: the canary's labels and severity.
        [(_, body)] = hook.bodies
        event = orjson.loads(body)["firing"][0]
        assert event["labels"] == {"team": "payments"}
        assert (event["namespace"], event["severity"]) == ("shop", "critical")

        families = {
            f.name: f for f in text_string_to_metric_families(server.client.get("/metrics").text)
        }
        samples = {
            (s.labels["receiver"], s.labels["integration"], s.labels["outcome"]): s.value
            for s in families["reconciler_notification_deliveries"].samples
            if s.name.endswith("_total")
        }
        assert samples == {
            ("chat", "webhook", "delivered"): 1,
            ("oncall", "pagerduty", "failed"): 1,
        }
        status = server.client.get("/api/v1/status", headers=READ).json()
        assert "PD_KEY_NOT_SET" in json.dumps(status)


def test_the_plan_shows_a_routing_change(config_repo: ConfigRepo) -> None:
    repo = make_repo(config_repo.path, "https://chat.example.com/hook")
    first = repo.git("rev-parse", "HEAD")
    repo.write(
        "alerting.yaml",
        ALERTING.format(url="https://chat.example.com/hook", matcher='team=~"payments|search"'),
    )
    second = repo.commit("route search too")
    result = run_cli("plan", "--repo", repo.path, "--ref", second, "--base", first)
    assert result.code == 0, result.err
    assert '~ alert_routing "default"' in result.out
    [line] = [line for line in result.out.splitlines() if line.strip().startswith("~ routes")]
    before, after = line.split(" -> ")
    assert 'team=\\"payments\\"' in before and 'team=~\\"payments|search\\"' in after
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in result.out


REMINDING = """
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {{name: chat}}
spec:
  webhook: {{url: "{url}"}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: default}}
spec: {{receiver: chat, group_wait: 0s, repeat_interval: 2s}}
"""


def test_a_restart_keeps_the_deliveries_and_the_reminders_due(tmp_path: Path) -> None:
    hook = Webhook()
    repo = make_repo(tmp_path / "config", hook.url)
    repo.write("alerting.yaml", REMINDING.format(url=hook.url))
    repo.commit("remind every 2s")
    state = tmp_path / "state.duckdb"
    with running_in_process(repo.path, state, ENV) as server:
        server.wait_ready()
        fail_runs(server, 3)
        wait_for(lambda: len(deliveries(server)["deliveries"]) == 1, 10, "the first delivery")
    sent_before = len(hook.bodies)
    with running_in_process(repo.path, state, ENV) as server:
        server.wait_ready()
        # What was delivered before the restart is listed, read back from the state file.
        assert deliveries(server)["deliveries"][-1]["events"] == ["incident_opened"]
        # The incident is still open: its reminder comes on time, from the stored group.
        wait_for(lambda: len(hook.bodies) > sent_before, 10, "a reminder after the restart")
        documents = [orjson.loads(body) for _, body in hook.bodies]
        assert [d["reminder"] for d in documents[sent_before:]] == [True] * (
            len(documents) - sent_before
        )
        # Nothing sent before the restart was sent again as new.
        assert [d["reminder"] for d in documents].count(False) == 1


def test_named_routes_show_in_the_plan_field_by_field(config_repo: ConfigRepo) -> None:
    named = ALERTING.replace("    - receiver: chat\n", "    - name: team\n      receiver: chat\n")
    named = named.replace(
        "    - receiver: oncall\n", "    - name: critical\n      receiver: oncall\n"
    )
    repo = make_repo(config_repo.path, "https://chat.example.com/hook")
    repo.write("alerting.yaml", named.format(url="https://chat.example.com/hook", matcher="team=a"))
    first = repo.commit("named routes")
    repo.write("alerting.yaml", named.format(url="https://chat.example.com/hook", matcher="team=b"))
    second = repo.commit("route team b")
    result = run_cli("plan", "--repo", repo.path, "--ref", second, "--base", first)
    assert result.code == 0, result.err
    assert '~ routes[team].matchers = ["team=a"] -> ["team=b"]' in result.out
    assert "critical" not in result.out  # the unchanged route is not shown
