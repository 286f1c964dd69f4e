"""SIGTERM stops a real `agent run` process with exit 0 in every state it can be in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.agentproc import AgentProcess, SwitchProxy, free_port, http_target
from tests.conftest import ROOT, ConfigRepo, agent_doc, region_doc
from tests.server import running_server, wait_for

# Real processes (a server, agents): the end-to-end tier.
pytestmark = pytest.mark.slow

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: a
spec:
  schedule: '@every 200ms'
  agentSelector: ['eu-1']
  http:
    - name: health
      url: {url}
      timeout: 150ms
"""

SHUTDOWN_TIMEOUT = 2.0
# Stopping may take the shutdown timeout, plus interpreter start-up slack on a busy machine.
STOP_BOUND = SHUTDOWN_TIMEOUT + 8.0


@pytest.fixture
def repo(config_repo: ConfigRepo) -> Iterator[ConfigRepo]:
    with http_target() as url:
        config_repo.write("regions.yaml", region_doc("eu"))
        config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
        config_repo.write("canaries/a.yaml", CANARY.format(url=url))
        config_repo.commit("initial")
        yield config_repo


def start(url: str, token: str, tmp_path: Path, *extra: str) -> AgentProcess:
    return AgentProcess(
        url, token, tmp_path / "spool.sqlite", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT), *extra
    )


def stop_within_bound(agent: AgentProcess) -> tuple[int, list[dict[str, object]]]:
    """SIGTERM the agent; its exit code and its JSON log lines, asserting it stopped in time
    without a traceback."""
    began = time.monotonic()
    code = agent.stop()
    took = time.monotonic() - began
    text = agent.log.read_text()
    assert "Traceback" not in text, text
    assert took < STOP_BOUND, f"stopping took {took:.1f}s"
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    return code, lines


def spooled_at_stop(lines: list[dict[str, object]]) -> int:
    """How many rows the agent said stay spooled when it stopped."""
    message = str(lines[-1]["message"])
    assert message.startswith("stopped; "), message
    return int(message.split()[1])


def test_sigterm_while_connected_ships_and_exits_0(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = start(server.url, server.token("eu-1"), tmp_path)
        wait_for(agent.ready, 10, "/ready")
        wait_for(lambda: agent.metric("rows_shipped_total") >= 3, 10, "results shipped")
        code, lines = stop_within_bound(agent)
    assert code == 0
    assert spooled_at_stop(lines) == 0


@pytest.mark.parametrize("how", ["SIGUSR1", "/disconnect"])
def test_sigterm_while_disconnected_exits_0_and_keeps_the_spool(
    repo: ConfigRepo, tmp_path: Path, how: str
) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = start(server.url, server.token("eu-1"), tmp_path, "--reconnect-after", "60")
        wait_for(agent.ready, 10, "/ready")
        if how == "SIGUSR1":
            agent.signal(signal.SIGUSR1)
        else:
            assert agent.status.post("/disconnect").status_code == 200
        wait_for(lambda: agent.metric("connected") == 0, 5, "disconnected")
        wait_for(lambda: agent.metric("spooled_rows") >= 3, 10, "results spooling")
        code, lines = stop_within_bound(agent)
    assert code == 0
    # Disconnected means disconnected: nothing is shipped on the way out, nothing is lost.
    assert spooled_at_stop(lines) >= 3


def test_sighup_asks_for_a_pull_and_stops_nothing(tmp_path: Path) -> None:
    # SIGHUP is how daemons are asked to read their configuration again; it killed the agent.
    nobody = f"http://127.0.0.1:{free_port()}"
    agent = start(nobody, "cra_eu-1.not-a-real-token", tmp_path, "--pull-interval", "3600")
    wait_for(lambda: agent.metric('pulls_total{outcome="unreachable"}') >= 1, 10, "a pull")
    agent.signal(signal.SIGHUP)
    # The next pull comes at once, not after the half hour its failure would wait.
    wait_for(lambda: agent.metric('pulls_total{outcome="unreachable"}') >= 2, 10, "a pull")
    assert agent.process.poll() is None
    code, lines = stop_within_bound(agent)
    assert code == 0
    assert any(line.get("message") == "SIGHUP: pulling the config now" for line in lines)


def test_sigterm_when_never_connected_exits_0(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    agent = start(nobody, "cra_eu-1.not-a-real-token", tmp_path)
    wait_for(lambda: agent.metric('pulls_total{outcome="unreachable"}') >= 1, 10, "a pull")
    assert agent.status.get("/ready").status_code == 503
    code, lines = stop_within_bound(agent)
    assert code == 0
    assert spooled_at_stop(lines) == 0


def test_sigterm_when_the_control_plane_went_away_exits_0(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = start(server.url, server.token("eu-1"), tmp_path)
        wait_for(lambda: agent.metric("rows_shipped_total") >= 3, 10, "first results")
    # The server is gone: pulls and pushes are refused while checks keep spooling.
    wait_for(lambda: agent.metric('pushes_total{outcome="unreachable"}') >= 1, 10, "a failed push")
    wait_for(lambda: agent.metric("spooled_rows") >= 3, 10, "results spooling")
    code, lines = stop_within_bound(agent)
    assert code == 0
    assert spooled_at_stop(lines) >= 3


def test_sigterm_mid_ship_exits_0_and_keeps_the_unacknowledged_rows(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        proxy = SwitchProxy(server.url)
        try:
            agent = start(proxy.url, server.token("eu-1"), tmp_path)
            wait_for(agent.ready, 10, "/ready")
            proxy.holding = True  # the next POST of results hangs, unanswered
            wait_for(lambda: proxy.held >= 1, 10, "a batch in flight")
            code, lines = stop_within_bound(agent)
        finally:
            proxy.close()
    assert code == 0
    # The batch in flight was never acknowledged by the server, so it is still spooled.
    assert spooled_at_stop(lines) >= 1


def test_a_status_port_in_use_is_an_error_at_start(tmp_path: Path) -> None:
    # --listen on a port another process holds ended in an OSError traceback from uvloop.
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    environ = {**os.environ, "AGENT_TOKEN": "cra_x.y", "RECONCILER_URL": "http://127.0.0.1:1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--spool", str(tmp_path / "spool.sqlite"),
             "--listen", f"127.0.0.1:{port}", "--log-format", "text"],
            cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"agent: error: --listen 127.0.0.1:{port}: cannot listen there: Address already in use"
    )
