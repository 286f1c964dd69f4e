"""End to end on loopback with no real traffic: nginx in front of a stable and a canary
backend, an agent probing both, and the canary controller deciding on the probes alone."""

from __future__ import annotations

import http.server
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import httpd
from tests.agentproc import AgentProcess, free_port
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import ServerProcess, running_server, wait_for
from tests.test_canary_e2e import ROUTE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx is not installed (make test installs Debian's nginx package)",
    ),
]


# One canary, two checks: one on each group's backend, run by the agent eu-1.
PROBES = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: checkout-probes
spec:
  schedule: '@every 200ms'
  agentSelector: ['eu-1']
  http:
    - name: stable
      url: {stable}/checkout/health
      timeout: 150ms
    - name: canary
      url: {canary}/checkout/health
      timeout: 150ms
"""


class Backend:
    """A backend that answers 200, or 503 while `unavailable` is set; counts its requests."""

    def __init__(self) -> None:
        self.unavailable = False
        self.paths: list[str] = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                backend.paths.append(self.path)
                self.send_response(503 if backend.unavailable else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server)

    def close(self) -> None:
        httpd.stop(self.server)


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    stable, canary = Backend(), Backend()
    yield stable, canary
    stable.close()
    canary.close()


def _canary(server: ServerProcess) -> dict[str, Any]:
    views = server.client.get("/canary").json()["canaries"]
    return dict(views[0]) if views else {}


@contextmanager
def probed_route(
    repo: ConfigRepo, tmp_path: Path, stable: Backend, canary: Backend
) -> Iterator[ServerProcess]:
    """The server with nginx as its gateway, and one agent probing both backends."""
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.write("route.yaml", ROUTE.format(stable=stable.url, canary=canary.url))
    repo.write("probes.yaml", PROBES.format(stable=stable.url, canary=canary.url))
    repo.commit("route and probes")
    extra = (
        "--gateway", "nginx", "--gateway-listen", f"127.0.0.1:{free_port()}",
        "--gateway-dir", str(tmp_path / "gateway"), "--canary-interval", "0.1",
    )  # fmt: skip
    with running_server(repo.path, tmp_path / "state.duckdb", extra=extra) as server:
        server.wait_ready()
        agent = AgentProcess(server.url, server.token("eu-1"), tmp_path / "spool.sqlite")
        try:
            yield server
        finally:
            assert agent.stop() == 0


def assert_no_real_traffic(tmp_path: Path, stable: Backend, canary: Backend) -> None:
    """Nothing went through nginx: every request the backends saw was a probe."""
    log = tmp_path / "gateway" / "logs" / "access.json"
    assert not log.exists() or log.read_text().strip() == ""
    assert set(stable.paths) == set(canary.paths) == {"/checkout/health"}


def test_healthy_probes_alone_carry_the_canary_to_completion(
    config_repo: ConfigRepo, tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    stable, canary = backends
    with probed_route(config_repo, tmp_path, stable, canary) as server:
        wait_for(lambda: _canary(server).get("state") == "completed", 60, "completion")
        view = _canary(server)
    assert view["gateway_weights"] == {"stable": 0, "canary": 100}
    passed = [e for e in view["evaluations"] if e["verdict"] == "pass"]
    assert {e["step"] for e in passed} >= {0, 1}, "each step was judged on the probes"
    assert_no_real_traffic(tmp_path, stable, canary)


def test_a_canary_backend_answering_503_to_probes_is_rolled_back(
    config_repo: ConfigRepo, tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    stable, canary = backends
    canary.unavailable = True
    with probed_route(config_repo, tmp_path, stable, canary) as server:
        wait_for(lambda: _canary(server).get("state") == "rolled_back", 60, "rollback")
        view = _canary(server)
    assert view["gateway_weights"] == {"stable": 90, "canary": 10}
    [failure] = [e for e in view["evaluations"] if e["verdict"] == "fail"][:1]
    assert "error" in failure["reason"]
    assert view["metrics"]["canary"]["errors"] >= 5
    assert view["metrics"]["stable"]["errors"] == 0
    assert_no_real_traffic(tmp_path, stable, canary)
