"""The composition root and the HTTP layer's rules: a failed start cleans up, an operator edit is
parsed once, request bodies are bounded, and every refusal has the same JSON shape."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.gateway.base import Gateway, GatewayError
from reconciler.server.http.common import answer_refusal
from reconciler.server.main import Parts
from reconciler.server.settings import ServeSettings
from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import running, serving, until_ready
from tests.server import ADMIN_TOKEN, WEBHOOK_SECRET
from tests.waiting import eventually

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  traffic_split:
    - name: stable
      weight: 90
      backends: [{url: 'http://127.0.0.1:9001'}]
    - name: canary
      weight: 10
      backends: [{url: 'http://127.0.0.1:9003'}]
  canary:
    canary_group: canary
    steps:
      - weight: 10
        pause: 1m
      - weight: 100
"""


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.write("routes/checkout.yaml", ROUTE)
    config_repo.commit("initial")
    return config_repo


def opens_read_write(state: Path) -> subprocess.CompletedProcess[str]:
    """Open the state file read-write from another process (DuckDB's lock is per process,
    so this process could not tell whether it still holds the file)."""
    code = "import duckdb, sys; duckdb.connect(sys.argv[1]).execute('CHECKPOINT').close()"
    return subprocess.run(
        [sys.executable, "-c", code, str(state)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# -- a failed start cleans up ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_gateway_that_fails_to_start_stops_every_part_and_frees_the_state(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    running_when_refused: set[str] = set()

    def refusing(settings: ServeSettings) -> Gateway | None:
        running_when_refused.update(t.get_name() for t in asyncio.all_tasks() if not t.done())
        raise GatewayError("nginx did not start: bind() to 127.0.0.1:8088 failed")

    before = asyncio.all_tasks()
    with pytest.raises(GatewayError, match="nginx did not start"):
        async with running(repo.path, state, open_gateway=refusing):
            pytest.fail("the server ran without the gateway it was asked for")

    # The gateway is opened after the control plane, the local agent and the incident
    # controller started: those are what must have been stopped.
    assert {"ingest-writer", "local-agent-flush", "incidents"} <= running_when_refused
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], "tasks of the server still running"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("state-")]
    opened = opens_read_write(state)
    assert opened.returncode == 0, opened.stderr


def _held_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, int(holder.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_serve_exits_saying_why_when_the_gateway_port_is_taken(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    holder, port = _held_port()
    started = time.monotonic()
    with holder:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "serve", "--repo", str(repo.path),
             "--state", str(state), "--port", "0", "--gateway", "nginx",
             "--gateway-listen", f"127.0.0.1:{port}", "--gateway-dir", str(tmp_path / "gw")],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=90,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 90
    assert "nginx did not start" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert not state.with_name(state.name + ".serve.json").exists(), "no server announced"
    opened = opens_read_write(state)
    assert opened.returncode == 0, opened.stderr


# -- one operator edit: one parse, one commit, one reconcile ---------------------------------------


def config_loads(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("reconciler_config_loads_total "):
            return float(line.split()[1])
    raise AssertionError("no reconciler_config_loads_total in /metrics")


@pytest.mark.anyio
async def test_an_operator_edit_is_loaded_once(repo: ConfigRepo, tmp_path: Path) -> None:
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        control = parts.control
        before = config_loads((await client.get("/metrics")).text)
        commits = int(repo.git("rev-list", "--count", "HEAD"))
        edited_at = datetime.now(UTC)

        response = await client.post("/operator/regions", json={"name": "ap"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert int(repo.git("rev-list", "--count", "HEAD")) == commits + 1
        assert config_loads((await client.get("/metrics")).text) == before + 1
        assert "ap" in [r.name for r in control.resources_of("Region")], "applied at once"

        # The watcher sees the new file and the moved HEAD and reconciles: it finds that
        # commit applied and loads nothing.
        def watcher_done() -> bool:
            attempt = control.last_attempt
            return (
                attempt is not None and "file change" in attempt.trigger and attempt.at >= edited_at
            )

        await eventually(watcher_done, 20, "the watcher's reconcile of the operator's commit")
        assert control.last_attempt is not None
        assert control.last_attempt.applied and not control.last_attempt.errors
        assert control.current is not None and control.current.sha == repo.git("rev-parse", "HEAD")
        assert config_loads((await client.get("/metrics")).text) == before + 1


# -- bounded bodies, one error shape ---------------------------------------------------------------


class Endless:
    """A request body of `chunk`-sized pieces that never ends; counts what was read of it."""

    def __init__(self, chunk: int = 16 * 1024) -> None:
        self.chunk = b"x" * chunk
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.read += 1
            yield self.chunk


def refusal_shape(response: httpx.Response) -> dict[str, Any]:
    """The body of a refusal: JSON with an "error" string."""
    assert response.headers["content-type"] == "application/json", response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body


# Every endpoint that reads a body, with the most it reads.
BOUNDED = [
    # Signed (wrongly): an unsigned webhook is refused before its body is read.
    ("POST", "/hooks/git", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 1024 * 1024),
    ("POST", "/api/routes/checkout/metrics", ADMIN, 64 * 1024),
    ("POST", "/api/site/build", ADMIN, 64 * 1024),
    ("POST", "/operator/regions", ADMIN, 64 * 1024),
    ("PATCH", "/operator/regions/eu", ADMIN, 64 * 1024),
    ("POST", "/operator/agents", ADMIN, 64 * 1024),
    ("PATCH", "/operator/agents/eu-1", ADMIN, 64 * 1024),
]


@pytest.fixture
async def server(
    repo: ConfigRepo, tmp_path: Path
) -> AsyncIterator[tuple[Parts, httpx.AsyncClient]]:
    env = {"RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET}
    async with serving(repo.path, tmp_path / "state.duckdb", env) as (parts, client):
        await until_ready(parts)
        yield parts, client


@pytest.mark.anyio
async def test_oversized_bodies_are_413_without_being_read(
    server: tuple[Parts, httpx.AsyncClient], repo: ConfigRepo
) -> None:
    parts, client = server
    head = repo.git("rev-parse", "HEAD")
    token = (await client.post("/operator/agents/eu-1/token", headers=ADMIN)).json()["token"]
    agent = {"Authorization": f"Bearer {token}"}
    limit = parts.control.settings.max_batch_bytes
    for method, path, headers, most in [
        *BOUNDED,
        ("POST", "/api/agent/results", agent, limit),
    ]:
        # A body without a length is read up to the limit, then refused.
        body = Endless()
        response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code == 413, (path, response.text)
        assert f"larger than {most} bytes" in refusal_shape(response)["error"]
        assert body.read * len(body.chunk) <= most + len(body.chunk), (path, body.read)
        # A declared length over the limit is refused before a byte is read.
        declared = Endless()
        response = await client.request(
            method, path, content=declared, headers={**headers, "Content-Length": str(most + 1)}
        )
        assert response.status_code == 413, (path, response.text)
        assert declared.read == 0, path
    assert repo.git("rev-parse", "HEAD") == head, "nothing was committed"
    assert repo.git("status", "--porcelain") == ""


@pytest.mark.anyio
async def test_canary_actions_do_not_read_the_body(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    body = Endless()
    response = await client.post("/canary/checkout/start", content=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "progressing"
    assert body.read == 0


@pytest.mark.anyio
async def test_every_refusal_is_json_from_the_one_handler(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    parts, client = server
    handled: list[int] = []
    assert parts.app.exception_handlers[RequestRefused] is answer_refusal

    async def counted(request: Request, refused: Exception) -> Response:
        assert isinstance(refused, RequestRefused)
        handled.append(refused.status)
        return await answer_refusal(request, refused)

    # Installed before the first request builds the app's middleware stack.
    parts.app.add_exception_handler(RequestRefused, counted)
    refusals: list[tuple[int, str, str, dict[str, Any]]] = [
        (401, "GET", "/api/agent/targets", {}),
        (401, "POST", "/api/agent/results", {"content": b"{}"}),
        (401, "POST", "/hooks/git", {"content": b"{}"}),
        (401, "GET", "/operator/agents", {}),
        (401, "POST", "/canary/checkout/start", {}),
        (404, "POST", "/canary/checkout/dance", {"headers": ADMIN}),
        (404, "POST", "/canary/nowhere/start", {"headers": ADMIN}),
        (409, "POST", "/canary/checkout/resume", {"headers": ADMIN}),
        (404, "GET", "/api/v1/targets/default.nope/uptime", {}),
        (400, "GET", "/api/v1/targets/default.web/results", {"params": {"limit": "ten"}}),
        (400, "GET", "/api/v1/incidents", {"params": {"state": "closed"}}),
        (404, "POST", "/api/routes/nowhere/metrics", {"json": {"groups": {}}, "headers": ADMIN}),
        (422, "POST", "/api/routes/checkout/metrics", {"json": {"groups": 1}, "headers": ADMIN}),
        (422, "POST", "/api/site/build", {"json": {"out": "relative"}, "headers": ADMIN}),
        (422, "POST", "/operator/regions", {"content": b"{name", "headers": ADMIN}),
        (409, "POST", "/operator/regions", {"json": {"name": "eu"}, "headers": ADMIN}),
        (404, "DELETE", "/operator/agents/nobody", {"headers": ADMIN}),
        (413, "POST", "/operator/agents", {"content": b"x" * 70_000, "headers": ADMIN}),
    ]
    for status, method, path, options in refusals:
        response = await client.request(method, path, **options)
        assert response.status_code == status, (method, path, response.text)
        refusal_shape(response)
    assert handled == [status for status, *_ in refusals]
    # 409 says the run's state beside the reason; 401 says which scheme to use.
    refused = await client.post("/canary/checkout/resume", headers=ADMIN)
    assert refused.json()["state"] == "pending"
    assert (await client.get("/operator/agents")).headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_unknown_paths_and_methods_answer_in_the_same_shape(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    missing = await client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert refusal_shape(missing)["error"] == "Not Found"
    wrong = await client.delete("/healthz")
    assert wrong.status_code == 405
    assert refusal_shape(wrong)["error"] == "Method Not Allowed"
    assert "GET" in wrong.headers["allow"]
