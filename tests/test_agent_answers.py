"""What the agent reads of the answers to its own requests (config pulls, result batches),
and what it logs when a request of its own gets no answer: `--url` may name another server
(a captive portal, a proxy), whose answers must cost a bounded amount of memory and lose no
results; a request the agent cut itself (a disconnect) must say so, not fail with `()`."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import Agent
from agent.settings import AgentSettings
from agent.spool import Spool
from schemas.wire import PULL_WAIT_HEADER
from tests import httpd
from tests.agentproc import AgentProcess
from tests.test_agent_shipping import running_agent
from tests.test_agent_shipping import settings as shipping_settings
from tests.waiting import eventually, wait_for

WAIT = 20.0
ROWS = 50
CONFIG_LIMIT = 64 * 1024 * 1024  # agent/answers.py MAX_CONFIG_BYTES
RECEIPT_LIMIT = 64 * 1024  # agent/answers.py MAX_ANSWER_BYTES
HUGE = 240 * 1024 * 1024  # what the tester's server streamed
CHUNK = b"x" * 65536


def spool_rows(path: Path, count: int = ROWS) -> None:
    """Results waiting in the spool, as a previous run left them."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    rows = [
        {
            "canary": "default/a@eu-1",
            "check": "check",
            "started_at": (start + timedelta(seconds=index)).isoformat(),
            "duration_ms": 1.0,
            "status": "pass",
            "message": f"row {index}",
        }
        for index in range(count)
    ]
    with Spool(path, 10_000) as spool:
        spool.append(rows)


def spooled(path: Path) -> int:
    with Spool(path, 10_000) as spool:
        return spool.depth()


class _Flood(BaseHTTPRequestHandler):
    """Answers every request with a 240 MiB chunked 200 that is not JSON (not the control
    plane: a server that streams a large file, a portal gone wrong)."""

    protocol_version = "HTTP/1.1"

    def _flood(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        for _ in range(HUGE // len(CHUNK)):
            self.wfile.write(frame)  # a client that hangs up ends this (BrokenPipeError)
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = _flood  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def peak_rss_bytes(pid: int) -> int:
    """The most memory the process has held (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_huge_answers_cost_bounded_memory_and_lose_no_rows(tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    spool_rows(spool)
    with httpd.serving(_Flood) as server:
        url = httpd.url(server)
        agent = AgentProcess(url, "cra_eu-1.test", spool)
        try:
            answered = 'pulls_total{outcome="too_large"}', 'pulls_total{outcome="invalid"}'
            wait_for(lambda: sum(agent.metric(m) for m in answered) >= 1, 60, "a pull answered")
            wait_for(lambda: agent.metric("pushes_total") >= 1, 60, "a batch answered")
            peak = peak_rss_bytes(agent.process.pid)
            assert peak < CONFIG_LIMIT + 160 * 1024 * 1024, f"peak RSS {peak >> 20} MiB"
            assert agent.metric('pulls_total{outcome="too_large"}') >= 1
            assert agent.metric('pushes_total{outcome="too_large"}') >= 1
            assert agent.metric("spooled_rows") == ROWS, "the rows stay spooled"
            assert agent.process.poll() is None
        finally:
            code = agent.stop()
    assert code == 0
    assert spooled(spool) == ROWS, "nothing was lost"
    messages = [json.loads(line)["message"] for line in agent.log.read_text().splitlines()]
    assert (
        f"config pull: response larger than {CONFIG_LIMIT} bytes from {url}/api/agent/targets: "
        "refused; is --url the control plane? keeping the last config"
    ) in messages
    assert (
        f"shipping {ROWS} rows: response larger than {RECEIPT_LIMIT} bytes from "
        f"{url}/api/agent/results: refused; is --url the control plane? they stay spooled"
    ) in messages


class _HoldingServer:
    """A control plane stand-in that holds what is sent to it until `release()`.

    With `declared` set, a pull gets only the head of a 200 declaring that many body bytes,
    then nothing. Otherwise the first pull gets an empty config with an ETag; a pull with an
    ETag is held (a long poll) and result batches get no answer while held.
    """

    def __init__(self, declared: int = 0) -> None:
        self.held_pulls = 0
        self.held_posts = 0
        self._released = threading.Event()
        holder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if declared:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(declared))
                    self.end_headers()
                    self.wfile.flush()
                    holder._released.wait(60)
                    return
                if self.headers.get("If-None-Match"):
                    holder.held_pulls += 1
                    holder._released.wait(60)
                    return
                body = b'{"agent": "eu-1", "region": "eu", "canaries": []}'
                self.send_response(200)
                self.send_header("ETag", '"v1"')
                self.send_header(PULL_WAIT_HEADER, "30")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers["Content-Length"]))
                holder.held_posts += 1
                holder._released.wait(60)

            def log_message(self, *args: object) -> None:
                pass

        self._http = httpd.start(Handler)
        self.url = httpd.url(self._http)

    def release(self) -> None:
        """Let the held requests end (unanswered)."""
        self._released.set()

    def close(self) -> None:
        self.release()
        httpd.stop(self._http)


@contextlib.contextmanager
def holding(declared: int = 0) -> Iterator[_HoldingServer]:
    server = _HoldingServer(declared)
    try:
        yield server
    finally:
        server.close()


def settings(url: str, spool: Path, **changes: Any) -> AgentSettings:
    """The shipping tests' agent, with the default batch size, long polls, a quick stop."""
    defaults = {"pull_wait": 30.0, "shutdown_timeout": 1.0, "batch_size": 500}
    return shipping_settings(url, spool, **{**defaults, **changes})


def agent_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agent"]


@pytest.mark.anyio
async def test_a_config_declared_too_large_is_refused_without_waiting_for_its_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    with holding(declared=CONFIG_LIMIT + 1) as server:
        agent = Agent(settings(server.url, tmp_path / "spool.sqlite"))
        async with running_agent(agent):
            # Well before the 10-second read timeout a body that never comes would end in.
            await eventually(
                lambda: "pulls_total" in agent.metrics.render(), 5.0, "the pull refused"
            )
            text = agent.metrics.render()
    assert 'agent_pulls_total{outcome="too_large"} 1' in text, text
    assert (
        f"config pull: response larger than {CONFIG_LIMIT} bytes from "
        f"{server.url}/api/agent/targets: refused; is --url the control plane? keeping the "
        "last config"
    ) in agent_lines(caplog)


@pytest.mark.anyio
async def test_a_disconnect_says_why_it_cut_the_pull_and_the_ship_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    spool = tmp_path / "spool.sqlite"
    spool_rows(spool)
    with holding() as server:
        agent = Agent(settings(server.url, spool, reconnect_after=30.0))
        async with running_agent(agent) as status:
            await eventually(
                lambda: server.held_pulls >= 1 and server.held_posts >= 1,
                WAIT,
                "a held pull and a batch in flight",
            )
            assert (await status.post("/disconnect")).status_code == 200
            await eventually(
                lambda: sum("cut short" in line for line in agent_lines(caplog)) >= 2,
                WAIT,
                "both requests cut short",
            )
            assert agent.spool.depth() == ROWS, "the batch in flight stays spooled"
    lines = agent_lines(caplog)
    assert (
        "config pull cut short: disconnected on request (POST /disconnect); keeping the last config"
    ) in lines
    assert (
        f"shipping {ROWS} rows cut short: disconnected on request (POST /disconnect); they "
        "stay spooled"
    ) in lines
    assert not [line for line in lines if "()" in line], lines
