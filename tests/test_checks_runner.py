"""The dispatcher never raises, and the client pool spreads requests over its clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agent.checks import CheckOutcome, ClientPool, result_row, run_check

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(check: Mapping[str, Any], now: Callable[[], datetime] = lambda: NOW) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            return await run_check(check, pool, now)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"name": "x", "type": "ftp", "timeout_ms": 100}, "unknown check type 'ftp'"),
        ({"name": "x", "timeout_ms": 100}, "unknown check type None"),
        ({"name": "x", "type": "http", "timeout_ms": 100}, "ValueError: field 'url' is required"),
        (
            {"name": "x", "type": "http", "timeout_ms": 100, "url": 5},
            "ValueError: field 'url' must be a string, got int",
        ),
        (
            {"name": "x", "type": "http", "timeout_ms": 100, "url": "ftp://127.0.0.1/"},
            "UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'.",
        ),
        (
            {"name": "x", "type": "tcp", "timeout_ms": 100, "endpoint": "no-port"},
            "ValueError: endpoint 'no-port' is not host:port",
        ),
        (
            {"name": "x", "type": "tls", "timeout_ms": 100, "endpoint": "127.0.0.1:99999"},
            "ValueError: endpoint '127.0.0.1:99999' is not host:port",
        ),
        (
            {"name": "x", "type": "tcp", "timeout_ms": "soon", "endpoint": "127.0.0.1:1"},
            "ValueError: timeout_ms must be a positive integer, got 'soon'",
        ),
        (
            {"name": "x", "type": "dns", "timeout_ms": 100, "query": "a.test", "minrecords": "2"},
            "ValueError: field 'minrecords' must be an integer, got '2'",
        ),
        (
            {"name": "x", "type": "dns", "timeout_ms": 100, "query": "a.test", "server": "nope:53"},
            "ValueError: server 'nope:53' is not an IP address or host name",
        ),
        (
            {
                "name": "x",
                "type": "http",
                "timeout_ms": 100,
                "url": "http://127.0.0.1:1/",
                "headers": ["Authorization: x"],
            },
            "ValueError: header 'Authorization: x' is not {name, value}",
        ),
    ],
)
def test_a_check_that_raises_becomes_an_error(check: dict[str, Any], message: str) -> None:
    outcome = run(check)
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith(message)
    assert outcome.started_at == NOW
    assert outcome.duration_ms >= 0


def test_broken_checks_never_propagate_even_together() -> None:
    async def main() -> list[CheckOutcome]:
        checks: list[Any] = [{"type": "tcp"}, {"type": "http", "url": None}, {}, {"type": []}]
        async with ClientPool(size=1, trust_env=False) as pool:
            return await asyncio.gather(*(run_check(c, pool, lambda: NOW) for c in checks))

    assert [o.status for o in asyncio.run(main())] == ["error"] * 4


def test_started_at_is_utc_and_aware_whatever_the_clock() -> None:
    check = {"name": "x", "type": "ftp", "timeout_ms": 100}
    naive = run(check, now=lambda: datetime(2030, 1, 2, 3, 4, 5))
    assert naive.started_at == NOW
    offset = run(check, now=lambda: NOW.astimezone(timezone(timedelta(hours=2))))
    assert offset.started_at == NOW
    assert offset.started_at.tzinfo is UTC

    def broken() -> datetime:
        raise RuntimeError("no clock")

    fallback = run(check, now=broken)
    assert fallback.started_at.tzinfo is UTC


def test_a_long_message_is_clipped_for_the_wire() -> None:
    outcome = run({"name": "x", "type": "tcp", "timeout_ms": 100, "endpoint": "h" * 5000})
    assert outcome.message is not None
    assert len(outcome.message) == 1024
    row = result_row("default/x@eu-1", "x", outcome)
    assert (row.status, row.phases, row.code) == ("error", None, None)


def test_the_pool_hands_out_its_clients_in_turn_and_closes_them() -> None:
    async def main() -> None:
        async with ClientPool(size=3, trust_env=False) as pool:
            clients = [pool.client() for _ in range(6)]
            assert len(pool) == 3
            assert len({id(c) for c in clients}) == 3
            assert clients[:3] == clients[3:]
        assert all(client.is_closed for client in clients)

    asyncio.run(main())


@pytest.mark.parametrize("size", [0, -1])
def test_a_pool_needs_a_client(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ClientPool(size=size)
