"""`agent run` against a real control plane on 127.0.0.1 and real local targets."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from agent.spool import Spool
from tests.agentproc import AgentProcess, SwitchProxy, _Target, free_port, http_target
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import ServerProcess, running_server, wait_for

# Agents and the control plane as real processes: the end-to-end tier.
pytestmark = pytest.mark.slow

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
spec:
  schedule: '@every 200ms'
  agentSelector: ['eu-1']
  http:
    - name: health
      url: {url}
      timeout: 150ms
"""


@pytest.fixture
def target() -> Iterator[str]:
    with http_target() as url:
        yield url


@pytest.fixture
def repo(config_repo: ConfigRepo, target: str) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/a.yaml", CANARY.format(name="a", url=target))
    config_repo.commit("initial")
    return config_repo


def stored(state: Path) -> list[tuple[str, str, object]]:
    with duckdb.connect(str(state), read_only=True) as connection:
        rows = connection.execute("SELECT canary, check_name, started_at FROM results").fetchall()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def canaries(agent: AgentProcess) -> float:
    return agent.metric("canaries")


def test_config_changes_reach_the_running_agent(
    repo: ConfigRepo, tmp_path: Path, target: str
) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = AgentProcess(server.url, server.token("eu-1"), tmp_path / "spool.sqlite")
        try:
            wait_for(agent.ready, 10, "/ready")
            wait_for(lambda: agent.metric("rows_shipped_total") >= 3, 10, "results shipped")
            repo.write("canaries/b.yaml", CANARY.format(name="b", url=target))
            repo.commit("add b")
            server.webhook()
            wait_for(lambda: canaries(agent) == 2, 10, "the new canary scheduled")
            repo.remove("canaries/a.yaml")
            repo.commit("drop a")
            server.webhook()
            wait_for(lambda: canaries(agent) == 1, 10, "the removed canary unscheduled")
            # Held pulls bring each commit within a second: let b's runs reach the server.
            shipped = agent.metric("rows_shipped_total")
            wait_for(lambda: agent.metric("rows_shipped_total") >= shipped + 3, 10, "b shipped")
        finally:
            assert agent.stop() == 0
    assert {canary for canary, _, _ in stored(tmp_path / "state.duckdb")} >= {
        "default/a@eu-1",
        "default/b@eu-1",
    }


@pytest.mark.parametrize("denial", ["revoked", "disabled"])
def test_401_and_403_stop_probing_and_clear_the_config(
    repo: ConfigRepo, tmp_path: Path, denial: str
) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = AgentProcess(server.url, server.token("eu-1"), tmp_path / "spool.sqlite")
        try:
            wait_for(lambda: canaries(agent) == 1, 10, "scheduled")
            if denial == "revoked":
                server.token("eu-1")  # rotation revokes the agent's token: 401
            else:
                repo.write("agents.yaml", agent_doc("eu-1", "eu", enabled=False))
                repo.commit("disable eu-1")
                server.webhook()
            wait_for(lambda: canaries(agent) == 0, 10, "checks stopped")
            assert agent.status.get("/ready").status_code == 503
            runs = agent.metric("checks_run_total")
            wait_for(lambda: agent.metric("pulls_total") >= 1, 5)
            code = "401" if denial == "revoked" else "403"
            assert agent.metric(f'pulls_total{{outcome="denied_{code}"}}') >= 1
            assert agent.metric("checks_run_total") <= runs + 1
        finally:
            assert agent.stop() == 0


@contextmanager
def behind_a_proxy(
    repo: ConfigRepo, tmp_path: Path
) -> Iterator[tuple[ServerProcess, SwitchProxy, AgentProcess]]:
    """A server, a proxy in front of it, and an agent through the proxy running its one
    canary; the agent must stop with 0."""
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        proxy = SwitchProxy(server.url)
        agent = AgentProcess(proxy.url, server.token("eu-1"), tmp_path / "spool.sqlite")
        try:
            wait_for(lambda: canaries(agent) == 1, 10, "scheduled")
            yield server, proxy, agent
        finally:
            assert agent.stop() == 0
            proxy.close()


def test_5xx_keeps_the_old_config_running(repo: ConfigRepo, tmp_path: Path) -> None:
    with behind_a_proxy(repo, tmp_path) as (_, proxy, agent):
        proxy.failing = True
        wait_for(lambda: agent.metric('pulls_total{outcome="server_error"}') >= 2, 10)
        runs = agent.metric("checks_run_total")
        wait_for(lambda: agent.metric("checks_run_total") >= runs + 5, 10, "checks go on")
        assert canaries(agent) == 1
        proxy.failing = False
        wait_for(lambda: agent.metric("buffer_rows") == 0, 10, "the backlog shipped")


def test_a_page_that_is_not_the_control_planes_stops_nothing(
    repo: ConfigRepo, target: str, tmp_path: Path
) -> None:
    # A 200 with an HTML page (a proxy's sign-in page) ended the pull loop: the agent ran on,
    # and never took a config again.
    with behind_a_proxy(repo, tmp_path) as (server, proxy, agent):
        proxy.captive = True
        wait_for(lambda: agent.metric('pulls_total{outcome="invalid"}') >= 1, 10)
        wait_for(lambda: agent.metric('pushes_total{outcome="invalid"}') >= 1, 15)
        assert canaries(agent) == 1  # the last config runs on, its rows spooled
        assert agent.metric("buffer_rows") > 0
        proxy.captive = False
        repo.write("canaries/b.yaml", CANARY.format(name="b", url=target))
        repo.commit("add b")
        server.webhook()
        wait_for(lambda: canaries(agent) == 2, 20, "the next config taken")
        wait_for(lambda: agent.metric("buffer_rows") == 0, 15, "the backlog shipped")


def test_control_plane_outage_loses_nothing_and_delivers_once(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state, port = tmp_path / "state.duckdb", free_port()
    extra = ("--port", str(port))
    server = ServerProcess(repo.path, state, extra=extra)
    server.wait_ready()
    agent = AgentProcess(server.url, server.token("eu-1"), tmp_path / "spool.sqlite")
    try:
        wait_for(lambda: agent.metric("rows_shipped_total") >= 3, 10, "first results")
        server.stop()
        wait_for(lambda: agent.metric("buffer_rows") >= 10, 15, "results spooling")
        server = ServerProcess(repo.path, state, extra=extra)
        server.wait_ready()
        wait_for(lambda: agent.metric("buffer_rows") == 0, 20, "the spool drained")
    finally:
        assert agent.stop() == 0
        server.stop()
    rows = stored(state)
    assert len(rows) == len(set(rows)), "every result is stored exactly once"
    assert len(rows) >= 13


def test_sigkill_then_restart_delivers_the_spool(repo: ConfigRepo, tmp_path: Path) -> None:
    state, port = tmp_path / "state.duckdb", free_port()
    extra = ("--port", str(port))
    server = ServerProcess(repo.path, state, extra=extra)
    server.wait_ready()
    token = server.token("eu-1")
    spool = tmp_path / "spool.sqlite"
    agent = AgentProcess(server.url, token, spool)
    wait_for(lambda: canaries(agent) == 1, 10, "scheduled")
    server.stop()
    wait_for(lambda: agent.metric("spooled_rows") >= 10, 15, "results spooling")
    spooled = agent.metric("spooled_rows")
    agent.kill()  # SIGKILL: no chance to flush
    server = ServerProcess(repo.path, state, extra=extra)
    try:
        server.wait_ready()
        restarted = AgentProcess(server.url, token, spool)
        try:
            wait_for(restarted.ready, 10, "ready")
            wait_for(lambda: restarted.metric("rows_shipped_total") >= spooled, 20, "delivered")
        finally:
            assert restarted.stop() == 0
    finally:
        server.stop()
    rows = stored(state)
    assert len(rows) == len(set(rows))
    assert len(rows) >= spooled


@pytest.mark.parametrize("how", ["SIGUSR1", "/disconnect"])
def test_disconnect_keeps_checks_running_then_reconnects(
    repo: ConfigRepo, tmp_path: Path, how: str
) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        # A pull interval far beyond the wait below: only the reconnect itself can bring
        # the agent back in time (it used to wait for its next pull).
        agent = AgentProcess(
            server.url,
            server.token("eu-1"),
            tmp_path / "spool.sqlite",
            *("--reconnect-after", "2", "--pull-interval", "60"),
        )
        try:
            wait_for(agent.ready, 10, "/ready")
            if how == "SIGUSR1":
                agent.signal(signal.SIGUSR1)
            else:
                assert agent.status.post("/disconnect").status_code == 200
            wait_for(lambda: agent.status.get("/ready").status_code == 503, 5, "503")
            assert agent.metric("connected") == 0
            runs = agent.metric("checks_run_total")
            wait_for(lambda: agent.metric("checks_run_total") >= runs + 3, 5, "checks go on")
            wait_for(agent.ready, 15, "reconnected")
            wait_for(lambda: agent.metric("buffer_rows") == 0, 10, "backlog shipped")
        finally:
            assert agent.stop() == 0


def test_a_batch_over_the_servers_size_limit_is_split_and_stored_whole(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """`reconcile serve --max-batch-bytes 2000` refuses the agent's batches with 413: the agent
    halves them, and every row it made is stored or still spooled."""
    state, spool = tmp_path / "state.duckdb", tmp_path / "spool.sqlite"
    with running_server(repo.path, state, extra=("--max-batch-bytes", "2000")) as server:
        server.wait_ready()
        token = server.token("eu-1")
        _Target.hits = 0
        # A flush every 3 s carries ~15 rows (~3 KB): over the limit, so it is halved.
        agent = AgentProcess(server.url, token, spool, "--flush-interval", "3")
        try:
            wait_for(lambda: agent.metric('pushes_total{outcome="http_413"}') >= 1, 20, "a 413")
            wait_for(lambda: agent.metric("rows_shipped_total") >= 30, 20, "rows shipped")
            assert agent.metric("dropped_rows_total") == 0
        finally:
            assert agent.stop() == 0
        hits = _Target.hits
    with Spool(spool, 10_000) as left:
        spooled = left.depth()
    rows = stored(state)
    assert len(rows) == len(set(rows)) >= 30
    assert len(rows) + spooled >= hits, "every check that reached the target left its row"
