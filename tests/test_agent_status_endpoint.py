"""The agent's status endpoint (`--listen`) as HTTP clients see it: HEAD is answered with
the headers a GET gets and no body, and never acts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.runtime import Agent
from agent.settings import AgentSettings
from tests.agentproc import free_port
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

WAIT = 20.0


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request; the status, the headers (lower-case names) and every byte after
    the head, read until the agent closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def test_head_gets_the_headers_of_get_and_no_body(tmp_path: Path) -> None:
    # Nothing listens at the URL: /ready stays 503 and the /metrics text stays the same.
    agent = Agent(
        AgentSettings(
            url=f"http://127.0.0.1:{free_port()}",
            token="cra_eu-1.test",
            spool=tmp_path / "spool.sqlite",
            listen=("127.0.0.1", 0),
            pull_interval=3600.0,
        )
    )
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: agent.status_port is not None, WAIT, "listening")
        await eventually(lambda: "pulls_total" in agent.metrics.render(), WAIT, "a pull")
        port = agent.status_port
        assert port is not None
        for path in ("/metrics", "/ready"):
            got = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await exchange(port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert got[1]["content-length"] == str(len(got[2])) and got[2], path
            assert head[:2] == got[:2], f"HEAD {path}: the same status and headers as GET"
            assert head[2] == b"", f"HEAD {path}: no body"
        status, _, body = await exchange(port, b"HEAD /disconnect HTTP/1.1\r\n\r\n")
        assert (status, body) == (405, b"")
        assert agent.connected, "HEAD /disconnect does not disconnect"
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
