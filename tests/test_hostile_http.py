"""Hostile HTTP input, in process: bodies refused before they are read, slow bodies cut off,
batches capped by rows, times without an offset, webhook replays and non-ASCII signatures
refused, admin output paths that cannot be written, readiness without detail, out-of-range
times, a server file left behind by a killed server, and a stop as the listener binds."""

from __future__ import annotations

import asyncio
import gzip
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
import uvicorn

from reconciler.cli.server_client import server_url
from reconciler.server.address_file import server_file
from reconciler.server.http.webhook import ReplayGuard
from reconciler.server.main import Parts, _serve, _Server
from reconciler.server.settings import SettingsError, load_settings
from tests.conftest import ConfigRepo, canary_doc, region_doc
from tests.inprocess import running, serving, until_ready
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


@pytest.mark.anyio
async def test_a_compressed_body_is_415_on_every_endpoint_reading_json(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    _, client = server
    agent = await _agent(client)
    batch = gzip.compress(orjson.dumps({"results": [_row()]}))
    region = gzip.compress(orjson.dumps({"name": "us", "displayName": "US"}))
    for path, body, headers in [
        ("/api/agent/results", batch, agent),
        ("/operator/regions", region, ADMIN),
        ("/hooks/git", batch, signed(batch)),
    ]:
        for coding in ("gzip", "br", "identity, gzip"):
            response = await client.post(
                path, content=body, headers={**headers, "Content-Encoding": coding}
            )
            assert response.status_code == 415, (path, coding, response.text)
            error = response.json()["error"]
            assert "Content-Encoding" in error and "uncompressed" in error, error
            assert response.headers["accept-encoding"] == "identity"
    results = await client.get("/api/v1/targets/default.web/results")
    assert results.json()["results"] == []
    plain = await client.post(
        "/api/agent/results",
        content=orjson.dumps({"results": [_row()]}),
        headers={**agent, "Content-Encoding": "identity"},
    )
    assert plain.json()["accepted"] == 1, plain.text


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


# -- times without an offset -----------------------------------------------------------------------


def _row(**overrides: Any) -> dict[str, Any]:
    """A valid result row of the `repo` fixture's canary, started a moment ago."""
    started = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    row = {"canary": "default/web@eu-1", "check": "check", "started_at": started}
    return {**row, "duration_ms": 12.5, "status": "pass", **overrides}


@pytest.mark.anyio
@pytest.mark.parametrize("sent_at", ["2026-12-06T10:00:00", "2026-12-06"])
async def test_a_sent_at_without_an_offset_is_400_naming_it_and_stores_nothing(
    server: tuple[Parts, httpx.AsyncClient], sent_at: str
) -> None:
    _, client = server
    agent = await _agent(client)
    body = orjson.dumps({"results": [_row()], "sent_at": sent_at})
    response = await client.post("/api/agent/results", content=body, headers=agent)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "sent_at" in error and "offset" in error and "Z" in error, error
    results = await client.get("/api/v1/targets/default.web/results")
    assert results.json()["results"] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "wrong",
    [
        [{"started_at": "2026-12-06T10:00:00"}, {"started_at": "2026-12-06"}],
        # docs/agent-protocol.md: a wrong type is malformed; `true` is not 1, "5" is not 5.
        [{"code": True}, {"code": "200"}, {"duration_ms": " 5 "}, {"retries": True},
         {"duration_ms": True}],
    ],
    ids=["a time without an offset", "a number as another type"],
)  # fmt: skip
async def test_a_row_of_the_wrong_form_is_dropped_as_malformed(
    server: tuple[Parts, httpx.AsyncClient], wrong: list[dict[str, Any]]
) -> None:
    _, client = server
    agent = await _agent(client)
    rows = [_row(), *(_row(**fields) for fields in wrong)]
    body = orjson.dumps({"results": rows, "sent_at": datetime.now(UTC).isoformat()})
    response = await client.post("/api/agent/results", content=body, headers=agent)
    assert response.status_code == 200, response.text
    dropped = {"malformed": len(wrong)}
    assert (response.json()["accepted"], response.json()["dropped"]) == (1, dropped)


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


@pytest.mark.anyio
async def test_a_signature_with_non_ascii_bytes_is_401_like_any_wrong_one(
    server: tuple[Parts, httpx.AsyncClient],
) -> None:
    parts, client = server
    triggers: list[str] = []
    parts.app.state.trigger = triggers.append
    push = b'{"ref": "refs/heads/main", "after": "3333"}'
    for value in (b"sha256=\xff", b"sha256=" + "\u00e9".encode("latin-1") * 64):
        headers = {"X-Hub-Signature-256": value}
        response = await client.post("/hooks/git", content=push, headers=headers)
        assert response.status_code == 401, (value, response.text)
        assert "X-Hub-Signature-256" in response.json()["error"]
    assert triggers == []


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


# -- admin output paths ----------------------------------------------------------------------------


def _unwritable_outs(base: Path) -> list[str]:
    """Output paths a site build or a backup cannot use, each for a reason of its own."""
    full = base / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    regular = base / "regular"
    regular.write_text("mine")
    return [
        str(full),  # not empty, and no site
        str(regular),  # a file
        str(base / "missing" / "out"),  # under a missing directory
        str(base / ("n" * 5000)),  # a name far too long
        str(base / ("n" * 300)),  # a name too long
        f"{base}/a\u0000b",  # a NUL byte
    ]


@pytest.mark.anyio
async def test_a_site_build_into_a_path_it_cannot_use_is_422_saying_why(
    server: tuple[Parts, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, client = server
    base = tmp_path / "outs"
    base.mkdir()
    outs = _unwritable_outs(base)
    before = sorted(os.walk(base))
    expected = ["is not empty", "is a file", "No such file or directory", "File name too long",
                "File name too long", "NUL byte"]  # fmt: skip
    for out, why in zip([*outs, "/"], [*expected, "is not empty"], strict=True):
        response = await client.post("/api/site/build", json={"out": out}, headers=ADMIN)
        assert response.status_code == 422, (out[:80], response.text)
        assert why in response.json()["error"], response.text
    assert sorted(os.walk(base)) == before, "nothing written"


@pytest.mark.anyio
async def test_a_backup_to_a_path_it_cannot_use_is_422_saying_why(
    server: tuple[Parts, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, client = server
    base = tmp_path / "outs"
    base.mkdir()
    outs = _unwritable_outs(base)[2:]
    before = sorted(os.walk(base))
    expected = ["is not a directory", "File name too long", "File name too long",
                "embedded null byte"]  # fmt: skip
    for out, why in zip(outs, expected, strict=True):
        response = await client.post("/api/state/backup", json={"out": out}, headers=ADMIN)
        assert response.status_code == 422, (out[:80], response.text)
        error = response.json()["error"]
        assert error.startswith("cannot write the backup to ") and why in error, error
    assert sorted(os.walk(base)) == before, "nothing written"


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


# -- a stop as the listener binds ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stop_asked_for_as_the_listener_binds_ends_serving_cleanly(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """SIGTERM a second after `reconcile serve` started: uvicorn bound, then closed its
    sockets before the server looked for its port (this raised IndexError, exit 1). A stop
    asked for before serving starts makes that order certain."""
    async with running(repo.path, tmp_path / "state.duckdb") as parts:
        config = uvicorn.Config(
            parts.app, host="127.0.0.1", port=0, lifespan="off", log_config=None
        )
        listener = _Server(config)
        listener.should_exit = True
        info = server_file(tmp_path / "state.duckdb")
        announced: list[str] = []
        await asyncio.wait_for(
            _serve(listener, parts.control.settings, parts, info, announced.append), 30
        )
        assert listener.started, "it did bind"
        assert announced == [], "no address to announce: it no longer listens"
        assert not info.exists()
