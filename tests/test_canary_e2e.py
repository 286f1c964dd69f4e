"""End to end on loopback: nginx in front of a stable and a canary backend, driven by the
canary controller through real traffic."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import httpd
from tests.agentproc import free_port
from tests.conftest import ConfigRepo
from tests.server import ServerProcess, running_server, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx is not installed (make test installs Debian's nginx package)",
    ),
]

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  path_prefix: true
  traffic_split:
    - name: stable
      weight: 90
      backends: [{{url: '{stable}'}}]
    - name: canary
      weight: 10
      backends: [{{url: '{canary}'}}]
  canary:
    canary_group: canary
    auto_start: true
    steps:
      - weight: 10
        pause: 1s
      - weight: 50
        pause: 1s
      - weight: 100
    analysis:
      error_threshold: 0.1
      min_requests: 5
      interval: 250ms
"""


class Backend:
    """A backend that answers with its name, or 500 once `failing` is set."""

    def __init__(self, name: str) -> None:
        self.failing = False
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                body = name.encode()
                self.send_response(500 if backend.failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = httpd.start(Handler)
        self.url = httpd.url(self.server)

    def close(self) -> None:
        httpd.stop(self.server)


@contextmanager
def traffic(url: str) -> Iterator[Counter[str]]:
    """Send requests through the gateway until the block ends (bounded: 200,000 at most)."""
    seen: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=5) as client:
            for _ in range(200_000):
                if stop.is_set():
                    return
                try:
                    response = client.get(url)
                except httpx.HTTPError:
                    continue
                seen[f"{response.status_code} {response.text}"] += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield seen
    finally:
        stop.set()
        worker.join(timeout=30)


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    stable, canary = Backend("stable"), Backend("canary")
    yield stable, canary
    stable.close()
    canary.close()


def _canary(server: ServerProcess) -> dict[str, Any]:
    views = server.client.get("/canary").json()["canaries"]
    return dict(views[0]) if views else {}


def _serve(repo: ConfigRepo, tmp_path: Path) -> tuple[Any, str]:
    port = free_port()
    extra = (
        "--gateway", "nginx", "--gateway-listen", f"127.0.0.1:{port}",
        "--gateway-dir", str(tmp_path / "gateway"), "--canary-interval", "0.1",
    )  # fmt: skip
    return running_server(repo.path, tmp_path / "state.duckdb", extra=extra), (
        f"http://127.0.0.1:{port}/checkout/pay"
    )


def test_a_healthy_canary_takes_all_traffic(
    config_repo: ConfigRepo, tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    stable, canary = backends
    config_repo.write("route.yaml", ROUTE.format(stable=stable.url, canary=canary.url))
    config_repo.commit("route")
    context, url = _serve(config_repo, tmp_path)
    with context as server:
        server.wait_ready()
        with traffic(url) as seen:
            wait_for(lambda: _canary(server).get("state") == "completed", 60, "completion")
            view = _canary(server)
        assert view["gateway_weights"] == {"stable": 0, "canary": 100}
        assert seen["200 stable"] > 0 and seen["200 canary"] > 0
        steps = {e["step"] for e in view["evaluations"] if e["verdict"] == "pass"}
        assert steps >= {0, 1}, "every step was evaluated on real traffic"
        with httpx.Client(timeout=5) as client:
            answers = Counter(client.get(url).text for _ in range(50))
        assert answers == Counter({"canary": 50})


def test_a_failing_canary_is_rolled_back_in_nginx(
    config_repo: ConfigRepo, tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    stable, canary = backends
    config_repo.write("route.yaml", ROUTE.format(stable=stable.url, canary=canary.url))
    config_repo.commit("route")
    canary.failing = True
    context, url = _serve(config_repo, tmp_path)
    with context as server:
        server.wait_ready()
        with traffic(url) as seen:
            wait_for(lambda: _canary(server).get("state") == "rolled_back", 60, "rollback")
        view = _canary(server)
        assert view["gateway_weights"] == {"stable": 90, "canary": 10}
        assert seen["500 canary"] > 0
        [failure] = [e for e in view["evaluations"] if e["verdict"] == "fail"][:1]
        assert "error" in failure["reason"]
        canary.failing = False
        with httpx.Client(timeout=5) as client:
            answers = Counter(client.get(url).text for _ in range(200))
        assert answers["stable"] > answers["canary"], answers
