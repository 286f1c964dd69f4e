"""TCP checks against a real listener and a closed port on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.checks import CheckOutcome, ClientPool, run_check

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def tcp(endpoint: str, **fields: Any) -> dict[str, Any]:
    return {"name": "port", "type": "tcp", "timeout_ms": 5000, "endpoint": endpoint, **fields}


async def _run(check: dict[str, Any]) -> CheckOutcome:
    async with ClientPool(size=1, trust_env=False) as pool:
        return await run_check(check, pool, lambda: NOW)


def test_an_open_port_passes() -> None:
    async def main() -> CheckOutcome:
        async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _run(tcp(f"127.0.0.1:{port}", thresholdMillis=5000))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.message, outcome.code) == ("pass", None, None)
    assert outcome.phases is not None
    assert set(outcome.phases) == {"connect_ms", "total_ms"}


def test_a_closed_port_fails_with_the_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = asyncio.run(_run(tcp(f"127.0.0.1:{port}")))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in outcome.message.lower()


def test_an_ipv6_endpoint_in_brackets_is_understood() -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
            port = sock.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    outcome = asyncio.run(_run(tcp(f"[::1]:{port}")))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith(f"cannot connect to [::1]:{port}: ")
