"""Hostile HTTP input, in process: bodies refused before they are read, slow bodies cut off,
batches capped by rows, webhook replays refused, readiness without detail, out-of-range
times, and a server file left behind by a killed server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from reconciler.cli.server_client import server_url
from reconciler.server.address_file import server_file
from reconciler.server.http.webhook import ReplayGuard
from reconciler.server.main import Parts
from reconciler.server.settings import SettingsError, load_settings
from tests.conftest import ConfigRepo, canary_doc, region_doc
from tests.inprocess import serving, until_ready
from tests.server import ADMIN_TOKEN, WEBHOOK_SECRET
from tests.waiting import eventually

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ_TOKEN = "test-read-token"


class Counted:
    """A request body of 16 KiB pieces that never ends; counts the pieces read."""

    def __init__(self) -> None:
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.read += 1
            yield b"x" * 16 * 1024


class Stalled:
    """A request body that sends a few bytes, then nothing, ever."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"results": ['
        await self.never.wait()


def signed(body: bytes, **headers: str) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", **headers}


@pytest.fixture
async def server(
    repo: ConfigRepo, tmp_path: Path
) -> AsyncIterator[tuple[Parts, httpx.AsyncClient]]:
    options: dict[str, Any] = {"body_timeout": 0.5, "max_batch_rows": 100}
    async with serving(repo.path, tmp_path / "state.duckdb", **options) as (parts, client):
        await until_ready(parts)
        yield parts, client


async def _agent(client: httpx.AsyncClient) -> dict[str, str]:
    token = (await client.post("/operator/agents/eu-1/token", headers=ADMIN)).json()["token"]
    return {"Authorization": f"Bearer {token}"}


# -- bodies ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unsigned_webhook_is_refused_before_a_byte_of_its_body_is_read(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    for headers in ({}, {"X-Hub-Signature-256": "md5=abc"}):
        body = Counted()
        response = await client.post("/hooks/git", content=body, headers=headers)
        assert response.status_code == 401, response.text
        assert "X-Hub-Signature-256" in response.json()["error"]
        assert body.read == 0


@pytest.mark.anyio
async def test_a_body_that_stops_arriving_is_408_naming_the_timeout(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    agent = await _agent(client)
    for path, headers in [
        ("/api/agent/results", agent),
        ("/hooks/git", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        ("/operator/regions", ADMIN),
    ]:
        request = client.post(path, content=Stalled(), headers=headers)
        response = await asyncio.wait_for(request, 20)
        assert response.status_code == 408, (path, response.text)
        assert "RECONCILER_BODY_TIMEOUT" in response.json()["error"]
        assert response.headers["connection"] == "close"
    metrics = (await client.get("/metrics")).text
    assert 'reconciler_http_requests_cut_total{reason="body_timeout"} 3' in metrics


# -- batches ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_batch_over_the_row_limit_is_413_naming_it_and_stores_nothing(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    parts, client = server
    agent = await _agent(client)
    over = orjson.dumps({"results": [1] * 101})
    response = await client.post("/api/agent/results", content=over, headers=agent)
    assert response.status_code == 413, response.text
    assert "101 rows" in response.json()["error"]
    assert "RECONCILER_MAX_BATCH_ROWS" in response.json()["error"]
    assert response.json()["limit"] == 100
    metrics = (await client.get("/metrics")).text
    assert "ingest_rows_dropped_total" not in metrics, "refused whole, not row by row"
    # At the limit, the rows are validated one by one as before.
    at_limit = orjson.dumps({"results": [1] * 100})
    response = await client.post("/api/agent/results", content=at_limit, headers=agent)
    assert response.status_code == 200, response.text
    assert response.json()["dropped"] == {"malformed": 100}


# -- webhook replays -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_replayed_webhook_is_refused_and_does_not_reconcile(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    parts, client = server
    triggers: list[str] = []
    parts.app.state.trigger = triggers.append
    push = b'{"ref": "refs/heads/main", "after": "1111"}'
    first = await client.post("/hooks/git", content=push, headers=signed(push))
    assert first.status_code == 202, first.text
    # The same signed body again, whatever delivery id is put beside it.
    for extra in ({}, {"X-GitHub-Delivery": "another-id"}):
        again = await client.post("/hooks/git", content=push, headers=signed(push, **extra))
        assert again.status_code == 409, again.text
        assert "RECONCILER_WEBHOOK_REPLAY_WINDOW" in again.json()["error"]
    other = b'{"ref": "refs/heads/main", "after": "2222"}'
    assert (
        await client.post("/hooks/git", content=other, headers=signed(other))
    ).status_code == 202
    assert triggers == ["webhook", "webhook"]


def test_the_replay_memory_forgets_after_its_window_and_beyond_its_capacity() -> None:
    guard = ReplayGuard(timedelta(seconds=600), capacity=2)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert guard.first_time("a", start) is None
    assert guard.first_time("a", start + timedelta(seconds=599)) == start
    assert guard.first_time("a", start + timedelta(seconds=600)) is None, "window passed"
    later = start + timedelta(seconds=601)
    assert guard.first_time("b", later) is None
    assert guard.first_time("c", later) is None  # full: "a", the oldest, is forgotten
    assert guard.first_time("a", later) is None
    assert guard.first_time("c", later) == later


# -- readiness -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_readyz_on_a_broken_repo_says_not_ready_and_nothing_more(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("canaries/bad.yaml", canary_doc("bad").replace("@every 30s", "secret-value"))
    config_repo.commit("broken by author@example.com")
    env = {"RECONCILER_READ_TOKEN": READ_TOKEN}
    async with serving(config_repo.path, tmp_path / "state.duckdb", env) as (parts, client):
        await eventually(lambda: parts.control.last_attempt is not None, 30, "the first attempt")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "starting",
            "ready": False,
            "reason": "the configuration could not be applied; details in /api/v1/status",
            "loops_ok": True,
        }
        for secret in ("secret-value", "author@example.com", "Test Author", str(tmp_path)):
            assert secret not in response.text
        # The detail is behind the read token.
        assert (await client.get("/api/v1/status")).status_code == 401
        detail = await client.get(
            "/api/v1/status", headers={"Authorization": f"Bearer {READ_TOKEN}"}
        )
        assert detail.status_code == 200
        assert "secret-value" in detail.text


# -- read API times --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_times_out_of_range_are_422_naming_the_parameter(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    for path in ("results", "uptime", "latency", "latency/by-region", "regions"):
        for name, value in [
            ("until", "0001-01-01T00:00:00Z"),
            ("since", "0001-01-01T00:00:00+01:00"),
            ("since", "700000d"),
            ("until", "9999-12-31T23:59:59Z"),
        ]:
            response = await client.get(f"/api/v1/targets/default.web/{path}", params={name: value})
            assert response.status_code == 422, (path, name, value, response.text)
            assert response.json()["error"].startswith(f"{name}: "), response.text
    many = "9" * 5000
    for path in ("/api/v1/targets/default.web/results", "/api/v1/revisions", "/api/v1/incidents"):
        response = await client.get(path, params={"limit": many})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith("limit: ")


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "RECONCILER_HEADER_TIMEOUT",
        "RECONCILER_BODY_TIMEOUT",
        "RECONCILER_MAX_CONNECTIONS",
        "RECONCILER_MAX_BATCH_ROWS",
        "RECONCILER_WEBHOOK_REPLAY_WINDOW",
    ],
)
def test_a_read_limit_of_zero_is_refused_at_start(variable: str) -> None:
    with pytest.raises(SettingsError, match="must be greater than 0"):
        load_settings({}, {variable: "0"})


# -- the server file a killed server leaves behind -------------------------------------------------


def _dead_pid() -> int:
    """A pid no process has: a child that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_server_file_naming_a_dead_process_is_ignored_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.duckdb"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        info = server_file(state)
        info.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
        assert server_url(state) == url, "a live process listening: the server is running"
        info.write_bytes(orjson.dumps({"url": url, "pid": _dead_pid()}))
        assert server_url(state) is None
    assert "not running" in capsys.readouterr().err
    # A live pid (reused by another process) but nobody at the address: not running either.
    info.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
    assert server_url(state) is None
    err = capsys.readouterr().err
    assert f"note: ignoring {info}" in err and "nothing accepts connections" in err
    assert server_url(state, "http://elsewhere:1/") == "http://elsewhere:1"
