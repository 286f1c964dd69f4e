"""Canaries selected with `local` run inside the control plane and land like any result."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import httpd
from tests.conftest import ConfigRepo, region_doc
from tests.inprocess import running_in_process
from tests.server import wait_for


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        httpd.reply(self, 200, b'{"status": "healthy"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    with httpd.serving(_Ok) as server:
        yield httpd.url(server, "/health")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_local_canaries_run_in_the_control_plane(
    config_repo: ConfigRepo, tmp_path: Path, target: str
) -> None:
    config_repo.write("regions.yaml", region_doc("default"))
    config_repo.write(
        "canaries/local.yaml",
        f"""
        apiVersion: canary-reconciler/v1
        kind: Canary
        metadata:
          name: api
        spec:
          schedule: '@every 1s'
          http:
            - name: health
              url: {target}
              test:
                expr: json.status == 'healthy'
          tcp:
            - name: closed
              endpoint: 127.0.0.1:{_closed_port()}
        """,
    )
    config_repo.commit("local canary")
    with running_in_process(config_repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()

        def results() -> list[dict[str, object]]:
            response = server.client.get("/api/v1/targets/default.api/results")
            rows: list[dict[str, object]] = response.json()["results"]
            return rows

        wait_for(lambda: {r["check"] for r in results()} == {"health", "closed"}, 15, "results")
        rows = results()
        health = next(r for r in rows if r["check"] == "health")
        closed = next(r for r in rows if r["check"] == "closed")
        assert (health["agent"], health["region"], health["status"]) == ("local", "default", "pass")
        assert health["code"] == 200
        assert closed["status"] == "fail"
