"""The canary controller through its admin API (in process; the CLI against a real server):
transitions, analysis, persistence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.gateway.memory import MemoryGateway
from tests.conftest import ROOT, ConfigRepo
from tests.inprocess import InProcessServer, running_in_process
from tests.server import ADMIN_TOKEN, running_server, wait_for

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  traffic_split:
    - name: stable
      weight: 60
      backends: [{{url: 'http://127.0.0.1:9001'}}]
    - name: beta
      weight: 30
      backends: [{{url: 'http://127.0.0.1:9002'}}]
    - name: canary
      weight: 10
      backends: [{{url: 'http://127.0.0.1:9003'}}]
  canary:
    canary_group: canary
    auto_start: {auto_start}
    steps:
      - weight: 10
        pause: {pause}
      - weight: 40
        pause: {pause}
      - weight: 100
    analysis:
      error_threshold: 0.05
      min_requests: 5
      max_failures: 2
      interval: 0s
"""

FAST = {"RECONCILER_CANARY_INTERVAL": "0.1", "RECONCILER_INCIDENT_INTERVAL": "0.2"}


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("route.yaml", ROUTE.format(auto_start="false", pause="300ms"))
    config_repo.commit("route with a canary")
    return config_repo


def canary(server: InProcessServer) -> dict[str, Any]:
    [view] = server.client.get("/canary").json()["canaries"]
    return dict(view)


def act(server: InProcessServer, action: str) -> Any:
    return server.admin("POST", f"/canary/checkout/{action}")


def push(server: InProcessServer, canary_errors: int = 0) -> None:
    groups = {
        "stable": {"requests": 60, "errors": 0, "p99_ms": 20.0},
        "beta": {"requests": 30, "errors": 0, "p99_ms": 21.0},
        "canary": {"requests": 10, "errors": canary_errors, "p99_ms": 22.0},
    }
    response = server.admin("POST", "/api/routes/checkout/metrics", json={"groups": groups})
    assert response.status_code == 202, response.text


def test_transitions_and_illegal_ones(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb", env=FAST) as server:
        server.wait_ready()
        wait_for(lambda: bool(server.client.get("/canary").json()["canaries"]), 10, "a run")
        view = canary(server)
        assert (view["state"], view["baseline_group"]) == ("pending", "stable")
        assert view["steps"][1]["weights"] == {"stable": 40, "beta": 20, "canary": 40}
        assert server.client.post("/canary/checkout/start").status_code == 401

        refused = act(server, "resume")
        assert refused.status_code == 409
        assert "resume" in refused.json()["error"]
        for action, state in [("start", "progressing"), ("pause", "paused"),
                              ("resume", "progressing"), ("rollback", "rolled_back")]:  # fmt: skip
            response = act(server, action)
            assert response.status_code == 200, response.text
            assert response.json()["state"] == state
        assert act(server, "start").status_code == 409
        assert act(server, "promote").status_code == 409
        assert canary(server)["weights"] == {"stable": 60, "beta": 30, "canary": 10}
        assert act(server, "dance").status_code == 404
        bad = {"groups": {"canary": {"requests": 1, "errors": 5}}}
        pushed = server.admin("POST", "/api/routes/checkout/metrics", json=bad)
        assert pushed.status_code == 422
        assert "errors (5) exceed requests (1)" in pushed.text
        assert server.client.get("/canary").status_code == 200


def test_healthy_canary_progresses_to_completion(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb", env=FAST) as server:
        server.wait_ready()
        wait_for(lambda: bool(server.client.get("/canary").json()["canaries"]), 10, "a run")
        assert act(server, "start").status_code == 200

        def progressed() -> bool:
            push(server)
            return canary(server)["state"] == "completed"

        wait_for(progressed, 20, "completion")
        view = canary(server)
        assert view["weights"] == {"stable": 0, "beta": 0, "canary": 100}
        passes = [e for e in view["evaluations"] if e["verdict"] == "pass"]
        assert passes, view["evaluations"]
        assert passes[0]["thresholds"]["error_threshold"] == 0.05
        assert passes[0]["canary_requests"] >= 5


def test_failing_canary_rolls_back(repo: ConfigRepo, tmp_path: Path) -> None:
    repo.write("route.yaml", ROUTE.format(auto_start="true", pause="10s"))
    repo.commit("auto start")
    with running_in_process(repo.path, tmp_path / "state.duckdb", env=FAST) as server:
        server.wait_ready()
        wait_for(lambda: canary(server)["state"] == "progressing", 10, "auto start")

        def rolled_back() -> bool:
            push(server, canary_errors=5)
            return canary(server)["state"] == "rolled_back"

        wait_for(rolled_back, 20, "rollback")
        view = canary(server)
        assert view["weights"] == {"stable": 60, "beta": 30, "canary": 10}
        failures = [e for e in view["evaluations"] if e["verdict"] == "fail"]
        assert len(failures) >= 2, "max_failures 2 tolerates one failing evaluation"
        assert "error" in failures[0]["reason"]


def test_a_run_survives_a_restart_and_an_unrelated_commit(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    with running_in_process(repo.path, state, env=FAST) as server:
        server.wait_ready()
        wait_for(lambda: bool(server.client.get("/canary").json()["canaries"]), 10, "a run")
        assert act(server, "start").status_code == 200
        assert act(server, "pause").status_code == 200
        run = canary(server)["run"]
    repo.write(
        "other.yaml", "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: eu\n"
    )
    repo.commit("unrelated")
    with running_in_process(repo.path, state, env=FAST) as server:
        server.wait_ready()
        view = canary(server)
        assert (view["run"], view["state"]) == (run, "paused")
        repo.write("route.yaml", ROUTE.format(auto_start="false", pause="1s"))
        repo.commit("change the steps")
        server.webhook()
        wait_for(lambda: canary(server)["run"] != run, 10, "a new run")
        assert canary(server)["state"] == "pending"


def test_actions_move_the_weights_on_the_gateway(repo: ConfigRepo, tmp_path: Path) -> None:
    gateway = MemoryGateway()
    with running_in_process(repo.path, tmp_path / "s.duckdb", FAST, gateway=gateway) as server:
        server.wait_ready()
        original = {"stable": 60, "beta": 30, "canary": 10}
        wait_for(lambda: gateway.weights("checkout") == original, 10, "the route on the gateway")
        assert canary(server)["gateway_weights"] == original
        assert act(server, "start").status_code == 200
        promoted = act(server, "promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["state"] == "completed"
        everything = {"stable": 0, "beta": 0, "canary": 100}
        assert gateway.weights("checkout") == everything, "applied before the answer"
        assert promoted.json()["gateway_weights"] == everything
    assert gateway.stopped, "the server stops its data plane"


@pytest.mark.slow
def test_canary_cli(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    command = [sys.executable, "-m", "reconciler", "canary"]
    env = {**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args, "--state", str(state)],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    with running_server(repo.path, state, env=FAST) as process:
        process.wait_ready()
        wait_for(lambda: bool(process.client.get("/canary").json()["canaries"]), 10, "a run")
        assert "checkout: pending" in cli("status").stdout
        started = cli("start", "checkout")
        assert started.returncode == 0, started.stderr
        assert "checkout: progressing" in started.stdout
        refused = cli("resume", "checkout")
        assert refused.returncode == 1
        assert "resume refused (409)" in refused.stderr
        assert cli("pause", "checkout").returncode == 0
    offline = cli("status", "checkout")
    assert offline.returncode == 0, offline.stderr
    assert "checkout: paused" in offline.stdout
    unknown = cli("status", "chekout")  # a typo says so, rather than "no canary runs"
    assert unknown.returncode == 1
    assert "no canary run for route 'chekout'; routes with one: " in unknown.stderr
    assert "checkout" in unknown.stderr.rpartition(":")[2]
