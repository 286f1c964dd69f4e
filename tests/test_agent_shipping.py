"""What the agent does with its rows when the control plane refuses a batch, and when it
reconnects: the agent against the real control plane (in process) and against a strict
server on 127.0.0.1; rows counted end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.runtime import Agent
from agent.settings import AgentSettings
from agent.spool import Spool
from reconciler.server.main import Parts
from tests import httpd
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.inprocess import BASE_URL, serving, until_ready
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: a
spec:
  schedule: '@never'
  agentSelector: ['eu-1']
  http:
    - name: check
      url: http://127.0.0.1:9/
"""
ROWS = 250
WAIT = 20.0


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/a.yaml", CANARY)
    config_repo.commit("initial")
    return config_repo


def result_rows(count: int, long_every: int = 0) -> list[dict[str, Any]]:
    """Rows of canary a's check from ten minutes ago; every `long_every`-th has a 4000-character
    message (a row larger than a 2 KB batch limit on its own)."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    rows = []
    for index in range(count):
        long = long_every and index % long_every == long_every - 1
        rows.append(
            {
                "canary": "default/a@eu-1",
                "check": "check",
                "started_at": (start + timedelta(milliseconds=index)).isoformat(),
                "duration_ms": 1.0,
                "status": "fail" if long else "pass",
                "message": "x" * 4000 if long else f"row {index}",
            }
        )
    return rows


def spool_with(path: Path, rows: list[dict[str, Any]]) -> None:
    with Spool(path, 10_000) as spool:
        spool.append(rows)


def settings(url: str, spool: Path, **changes: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "token": "cra_eu-1.test",
        "spool": spool,
        "listen": ("127.0.0.1", 0),
        "flush_interval": 0.05,
        "pull_interval": 30.0,
        "batch_size": ROWS,
        **changes,
    }
    return AgentSettings(url=url, **values)


@contextlib.asynccontextmanager
async def running_agent(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    """Run the agent on this loop; yield a client of its status endpoint; stop it after."""
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: agent.status_port is not None or task.done(), WAIT, "listening")
        status = httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.status_port}")
        async with status:
            yield status
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in\n{text}")


async def stored(parts: Parts) -> int:
    return (await parts.control.results_last_hour()).get("eu-1", 0)


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]


async def test_a_batch_too_large_for_the_server_is_split_and_all_rows_stored(
    repo: ConfigRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.sqlite"
    spool_with(spool, result_rows(ROWS))
    async with serving(repo.path, tmp_path / "state.duckdb", max_batch_bytes=8000) as (parts, _):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        transport = httpx.ASGITransport(app=parts.app)
        agent = Agent(settings(BASE_URL, spool, token=token), api_transport=transport)
        async with running_agent(agent) as status:
            await eventually(lambda: agent.spool.depth() == 0, WAIT, "the spool drained")
            text = (await status.get("/metrics")).text
        assert await stored(parts) == ROWS
    assert metric(text, 'agent_rows_shipped_total{outcome="accepted"}') == ROWS
    assert metric(text, 'agent_pushes_total{outcome="http_413"}') >= 1
    for reason in ("http_413", "http_400", "http_422", "spool_full", "spool_corrupt"):
        assert metric(text, f'agent_dropped_rows_total{{reason="{reason}"}}') == 0
    assert refusal_lines(caplog) == []


async def test_rows_too_large_on_their_own_are_counted_once_per_batch(
    repo: ConfigRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.sqlite"
    spool_with(spool, result_rows(ROWS, long_every=25))  # 10 rows of ~4 KB
    caplog.set_level(logging.WARNING, logger="agent")
    async with serving(repo.path, tmp_path / "state.duckdb", max_batch_bytes=2000) as (parts, _):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        transport = httpx.ASGITransport(app=parts.app)
        agent = Agent(settings(BASE_URL, spool, token=token), api_transport=transport)
        async with running_agent(agent) as status:
            await eventually(lambda: agent.spool.depth() == 0, WAIT, "the spool drained")
            text = (await status.get("/metrics")).text
        assert await stored(parts) == ROWS - 10
    assert metric(text, 'agent_dropped_rows_total{reason="http_413"}') == 10
    lines = refusal_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("the control plane refused 10 of 250 rows one by one (10 with 413")


class StrictServer:
    """A control plane stand-in on 127.0.0.1 that refuses, as a whole, any batch holding a
    row whose message is `bad400` or `bad422` (400 or 422, as the real server answers a body
    it cannot read), answers 503 while `failing` (or to the posts numbered in `fail_posts`),
    and keeps every row of the batches it takes.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.failing = False
        self.fail_posts: set[int] = set()
        self.posts = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                messages = {row.get("message") for row in body["results"]}
                status, answer = 200, {}
                server.posts += 1
                if server.failing or server.posts in server.fail_posts:
                    status, answer = 503, {"error": "unavailable"}
                elif "bad400" in messages or "bad422" in messages:
                    status = 400 if "bad400" in messages else 422
                    answer = {"error": f'expected {{"results": [row, ...]}}: {status}'}
                else:
                    server.rows += body["results"]
                    answer = {"accepted": len(body["results"]), "duplicates": 0, "dropped": {}}
                self.reply(status, answer)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.reply(200, {"agent": "eu-1", "region": "eu", "canaries": []})

            def reply(self, status: int, answer: dict[str, Any]) -> None:
                content = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: object) -> None:
                pass

        self._http = httpd.start(Handler)
        self.url = httpd.url(self._http)

    def close(self) -> None:
        httpd.stop(self._http)


@pytest.fixture
def strict() -> Iterator[StrictServer]:
    server = StrictServer()
    yield server
    server.close()


def poisoned(rows: list[dict[str, Any]], marks: dict[int, str]) -> list[dict[str, Any]]:
    for index, mark in marks.items():
        rows[index]["message"] = mark
    return rows


async def test_rows_refused_one_by_one_are_dropped_counted_and_logged_once(
    strict: StrictServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marks = {3: "bad400", 100: "bad422", 101: "bad422", 249: "bad400"}
    spool = tmp_path / "spool.sqlite"
    spool_with(spool, poisoned(result_rows(ROWS), marks))
    caplog.set_level(logging.WARNING, logger="agent")
    agent = Agent(settings(strict.url, spool))
    async with running_agent(agent) as status:
        await eventually(lambda: agent.spool.depth() == 0, WAIT, "the spool drained")
        text = (await status.get("/metrics")).text
    delivered = [row["message"] for row in strict.rows]
    assert len(delivered) == ROWS - 4
    assert sorted(delivered) == sorted(
        f"row {index}" for index in range(ROWS) if index not in marks
    ), "every other row is delivered, once"
    assert metric(text, 'agent_dropped_rows_total{reason="http_400"}') == 2
    assert metric(text, 'agent_dropped_rows_total{reason="http_422"}') == 2
    lines = refusal_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("the control plane refused 4 of 250 rows one by one")
    assert "2 with 400: expected" in lines[0] and "2 with 422: expected" in lines[0]


async def test_a_5xx_while_halving_keeps_the_rest_and_counts_each_refusal_once(
    strict: StrictServer, tmp_path: Path
) -> None:
    marks = {0: "bad422", 7: "bad422", 120: "bad400", 200: "bad400"}
    spool = tmp_path / "spool.sqlite"
    spool_with(spool, poisoned(result_rows(ROWS), marks))
    strict.fail_posts = {12, 13}  # in the middle of the halving
    agent = Agent(settings(strict.url, spool))
    async with running_agent(agent) as status:
        await eventually(lambda: agent.spool.depth() == 0, WAIT, "the spool drained")
        text = (await status.get("/metrics")).text
    delivered = sorted(row["message"] for row in strict.rows)
    assert delivered == sorted(f"row {i}" for i in range(ROWS) if i not in marks)
    assert metric(text, 'agent_pushes_total{outcome="http_503"}') == 2
    assert metric(text, 'agent_dropped_rows_total{reason="http_422"}') == 2
    assert metric(text, 'agent_dropped_rows_total{reason="http_400"}') == 2


async def test_5xx_keeps_every_row_spooled(strict: StrictServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    spool_with(spool, result_rows(ROWS))
    strict.failing = True
    agent = Agent(settings(strict.url, spool))
    async with running_agent(agent) as status:
        await eventually(
            lambda: agent.metrics.render().count('outcome="http_503"') > 0, WAIT, "a 503"
        )
        assert agent.spool.depth() == ROWS
        strict.failing = False
        await eventually(lambda: agent.spool.depth() == 0, WAIT, "the spool drained")
        text = (await status.get("/metrics")).text
    assert len(strict.rows) == ROWS
    assert (
        sum(
            metric(text, f'agent_dropped_rows_total{{reason="{reason}"}}')
            for reason in ("http_400", "http_413", "http_422", "spool_full")
        )
        == 0
    )


@pytest.mark.parametrize("how", ["/disconnect", "disconnect()"])
async def test_a_disconnect_ends_after_reconnect_after_not_at_the_next_pull(
    strict: StrictServer, tmp_path: Path, how: str
) -> None:
    agent = Agent(settings(strict.url, tmp_path / "spool.sqlite", reconnect_after=0.3))
    async with running_agent(agent) as status:
        await eventually(lambda: agent.ready, WAIT, "the first pull")
        updated = 'agent_pulls_total{outcome="updated"}'
        before = metric((await status.get("/metrics")).text, updated)
        if how == "/disconnect":
            assert (await status.post("/disconnect")).status_code == 200
        else:
            agent.disconnect()  # what SIGUSR1 calls
        assert (await status.get("/ready")).status_code == 503
        # The pull interval is 30 s: only the reconnect can bring the agent back this soon.
        await eventually(lambda: agent.ready and agent.connected, 5.0, "reconnected")
        after = metric((await status.get("/metrics")).text, updated)
        assert after == before + 1, "the reconnect pulled at once"
        assert (await status.get("/ready")).status_code == 200


async def test_the_status_endpoint_bounds_what_it_reads(
    strict: StrictServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(settings(strict.url, tmp_path / "spool.sqlite"))
    async with running_agent(agent) as status:
        port = agent.status_port
        for request in (
            b"GET /ready HTTP/1.1\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",
            b"GET /ready HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 1000 + b"\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            assert answer in (
                b"",
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 12\r\nConnection: close\r\n\r\nbad request\n",
            )
        assert (await status.get("/metrics")).status_code == 200, "it still answers"
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
