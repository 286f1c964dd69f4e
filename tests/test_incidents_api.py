"""Incidents on the server (in process): detection across regions, the API, metrics, restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import wait_for

READ_TOKEN = "incidents-read-secret"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
# Evaluate every 50 ms instead of every 5 s.
ENV = {"RECONCILER_INCIDENT_INTERVAL": "0.05", "RECONCILER_READ_TOKEN": READ_TOKEN}
PERIOD = timedelta(minutes=1)

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
  namespace: {namespace}
spec:
  schedule: '@every 1m'
  agentSelector: {selector}
  incidentPolicy: {policy}
  http:
{checks}"""
CHECK = "    - name: {name}\n      url: https://example.com/{name}\n"
# web runs two checks per tick; a run fails when either fails.
CHECKS = {"default/web": ["home", "login"], "monitoring/api": ["check"]}


def make_repo(path: Path) -> ConfigRepo:
    """Three regions of one agent each; `web` runs in all three, `api` only in eu."""
    repo = ConfigRepo(path)
    repo.write("regions.yaml", "---\n".join(region_doc(r) for r in ("eu", "us", "ap")))
    agents = [agent_doc(f"{r}-1", r) for r in ("eu", "us", "ap")]
    repo.write("agents.yaml", "---\n".join(agents))
    for key, selector, policy in (
        ("default/web", "['*']", "majority"),
        ("monitoring/api", "['eu-1']", "all"),
    ):
        namespace, name = key.split("/")
        checks = "".join(CHECK.format(name=check) for check in CHECKS[key])
        document = CANARY.format(
            name=name, namespace=namespace, selector=selector, policy=policy, checks=checks
        )
        repo.write(f"canaries/{name}.yaml", document)
    repo.commit("initial")
    return repo


def post(server: InProcessServer, agent: str, canary: str, outcomes: str, ahead: int = 0) -> None:
    """One run per outcome ("p" pass, "f" fail), a period apart, the last `ahead` periods
    from now (the server accepts runs up to 5 minutes ahead of its clock).

    Each run has a row per check, started 0.2 s apart; in a failed run only the last fails.
    """
    last = datetime.now(UTC) + ahead * PERIOD
    checks = CHECKS[canary]
    rows = [
        {
            "canary": f"{canary}@{agent}",
            "check": check,
            "started_at": (
                last - (len(outcomes) - 1 - i) * PERIOD + timedelta(seconds=0.2 * j)
            ).isoformat(),
            "duration_ms": 12.0,
            "status": "fail" if outcome == "f" and j == len(checks) - 1 else "pass",
            "code": 503 if outcome == "f" and j == len(checks) - 1 else 200,
        }
        for i, outcome in enumerate(outcomes)
        for j, check in enumerate(checks)
    ]
    response = server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {server.token(agent)}"},
        content=json.dumps({"results": rows}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(rows), response.text


def incidents(server: InProcessServer, **params: str) -> list[dict[str, Any]]:
    response = server.client.get("/api/v1/incidents", params=params, headers=READ)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["incidents"]
    return found


def metric(server: InProcessServer, name: str) -> float | None:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def wait_for_state(server: InProcessServer, target: str, state: str) -> dict[str, Any]:
    wait_for(
        lambda: [i["state"] for i in incidents(server, canary=target)] == [state],
        10,
        f"one {state} incident for {target}",
    )
    return incidents(server, canary=target)[0]


def open_incidents(server: InProcessServer) -> None:
    """web passes in ap, then fails in eu and us (2 of 3 regions); api fails in eu."""
    post(server, "ap-1", "default/web", "pp")
    post(server, "eu-1", "default/web", "fff")
    post(server, "us-1", "default/web", "fff")
    post(server, "eu-1", "monitoring/api", "fff")
    wait_for_state(server, "default.web", "open")
    wait_for_state(server, "monitoring.api", "open")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    base = tmp_path_factory.mktemp("incidents-api")
    repo = make_repo(base / "config")
    with running_in_process(repo.path, base / "state.duckdb", ENV) as process:
        process.wait_ready()
        open_incidents(process)
        yield process


def test_two_of_three_regions_open_one_incident_with_a_timeline(server: InProcessServer) -> None:
    (web,) = incidents(server, canary="default.web")
    assert (web["target"], web["canary"], web["state"]) == ("default.web", "default/web", "open")
    assert web["region"] is None
    assert web["resolved_at"] is None
    assert web["regions_down"] == ["eu", "us"]
    assert sorted((e["region"], e["change"]) for e in web["timeline"]) == [
        ("eu", "down"),
        ("us", "down"),
    ]
    assert all(e["at"].endswith("Z") for e in web["timeline"])
    assert datetime.fromisoformat(web["opened_at"]) <= datetime.now(UTC)


def test_filters(server: InProcessServer) -> None:
    everything = incidents(server)
    assert sorted(i["target"] for i in everything) == ["default.web", "monitoring.api"]
    assert len({i["id"] for i in everything}) == 2
    (api,) = incidents(server, canary="monitoring.api")
    assert api["regions_down"] == ["eu"]
    assert [i["target"] for i in incidents(server, canary="default.web", state="open")] == [
        "default.web"
    ]
    assert incidents(server, state="resolved") == []
    assert incidents(server, canary="default.nothing") == []
    assert len(incidents(server, limit="1")) == 1
    for params in ({"state": "closed"}, {"limit": "0"}, {"limit": "many"}):
        response = server.client.get("/api/v1/incidents", params=params, headers=READ)
        assert response.status_code == 400, params


def test_the_read_token_is_required(server: InProcessServer) -> None:
    assert server.client.get("/api/v1/incidents").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert server.client.get("/api/v1/incidents", headers=wrong).status_code == 401


def test_metrics_and_events(server: InProcessServer) -> None:
    assert metric(server, "reconciler_incidents_open") == 2
    assert metric(server, "reconciler_incidents_opened_total") == 2
    assert metric(server, "reconciler_incidents_resolved_total") == 0
    log = server.logs()
    assert log.count("incident_opened") == 2


def test_a_restart_keeps_the_incident_and_passes_resolve_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "config")
    state = tmp_path / "state.duckdb"
    with running_in_process(repo.path, state, ENV) as first:
        first.wait_ready()
        open_incidents(first)
        before = incidents(first, canary="default.web")
    with running_in_process(repo.path, state, ENV) as second:
        second.wait_ready()
        assert incidents(second, canary="default.web") == before
        assert metric(second, "reconciler_incidents_open") == 2
        # Failures after the restart keep the incident open; then eu passes twice (the
        # successThreshold): 1 of 3 regions down is no majority, so it resolves. Runs start
        # after the stored ones, up to two periods ahead of now.
        post(second, "us-1", "default/web", "f")
        post(second, "eu-1", "default/web", "fpp", ahead=2)
        resolved = wait_for_state(second, "default.web", "resolved")
        assert resolved["id"] == before[0]["id"]
        assert resolved["opened_at"] == before[0]["opened_at"]
        assert resolved["resolved_at"] is not None
        assert resolved["regions_down"] == ["us"]
        changes = [(e["region"], e["change"]) for e in resolved["timeline"]]
        assert sorted(changes) == [("eu", "down"), ("eu", "up"), ("us", "down")]
        assert [i["target"] for i in incidents(second, state="resolved")] == ["default.web"]
        assert [i["target"] for i in incidents(second, state="open")] == ["monitoring.api"]
        wait_for(lambda: metric(second, "reconciler_incidents_open") == 1, 5, "the gauge")
        assert metric(second, "reconciler_incidents_resolved_total") == 1
        assert metric(second, "reconciler_incidents_opened_total") == 0
        assert "incident_resolved" in second.logs()
