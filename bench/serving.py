"""Benchmark agent config serving: `GET /api/agent/targets` answered 304 and 200 by a real
`reconcile serve`, beside a bare Starlette app returning the same prepared bytes, same run.

A hand-written asyncio client holds `--connections` keep-alive connections, each sending the
next request as soon as the last answer is read; the server's CPU comes from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import (
    Process,
    Server,
    add_keep_option,
    cpu_seconds,
    free_port,
    wait_until,
    workspace,
)
from ingest import settle, write_repo

TARGET_304_PER_SECOND = 10_000
TARGET_CPU_PER_304_US = 100.0
PATH = "/api/agent/targets"

BARE_APP = textwrap.dedent(
    '''
    """A bare Starlette app serving prepared config bytes with an ETag (the reference)."""
    import pathlib, sys
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    import uvicorn

    BODY = pathlib.Path(sys.argv[1]).read_bytes()
    ETAG = pathlib.Path(sys.argv[2]).read_text()
    HEADERS = {"ETag": ETAG, "Cache-Control": "no-cache"}

    async def targets(request):
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers=HEADERS)
        return Response(BODY, media_type="application/json", headers=HEADERS)

    app = Starlette(routes=[Route("/api/agent/targets", targets)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning",
                access_log=False)
    '''
)


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the same request again after each full answer."""

    def __init__(self, request: bytes, until: float, done: asyncio.Future[None]) -> None:
        self.request, self.until, self.done = request, until, done
        self.buffer = bytearray()
        self.answers: dict[int, int] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + 17 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            self.answers[status] = self.answers.get(status, 0) + 1
            del self.buffer[: end + 4 + length]
            assert self.transport is not None
            if time.perf_counter() >= self.until:
                self.transport.close()
                return
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(port: int, request: bytes, connections: int, seconds: float) -> dict[int, int]:
    loop = asyncio.get_running_loop()
    until = time.perf_counter() + seconds
    made = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_connection(
            lambda done=done: _Connection(request, until, done), "127.0.0.1", port
        )
        made.append(protocol)
    await asyncio.gather(*(p.done for p in made))
    totals: dict[int, int] = {}
    for protocol in made:
        for status, count in protocol.answers.items():
            totals[status] = totals.get(status, 0) + count
    return totals


@dataclass(frozen=True)
class Rate:
    """One measured phase: answers per second and server CPU per answer."""

    per_second: float
    cpu_us: float
    answers: dict[int, int]


def measure(
    pid: int, port: int, request: bytes, connections: int, seconds: float, expect: int
) -> Rate:
    """Load one server with one request for `seconds`; refuses answers other than `expect`."""
    asyncio.run(_load(port, request, connections, min(0.5, seconds)))  # warm up
    cpu, started = cpu_seconds(pid), time.perf_counter()
    answers = asyncio.run(_load(port, request, connections, seconds))
    wall, spent = time.perf_counter() - started, cpu_seconds(pid)
    count = sum(answers.values())
    if set(answers) != {expect}:
        raise SystemExit(f"bench: expected only {expect} answers, got {answers}")
    used = (spent - cpu) if spent is not None and cpu is not None else float("nan")
    return Rate(count / wall, used / count * 1e6 if count else float("inf"), answers)


def request_bytes(port: int, token: str, etag: str | None) -> bytes:
    """A raw keep-alive GET of the config, conditional when `etag` is given."""
    lines = [
        f"GET {PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {token}",
        *([f"If-None-Match: {etag}"] if etag else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (50)")
    parser.add_argument("--seconds", type=float, default=4.0, help="each phase's length (4)")
    parser.add_argument("--canaries", type=int, default=1000, help="canaries of the agent (1000)")
    add_keep_option(parser)
    return parser.parse_args(argv)


def run(arguments: argparse.Namespace, base: Path) -> bool:
    """Both servers, both answers; prints the table and the verdicts."""
    fleet = write_repo(base / "repo", 1, 1, arguments.canaries)
    agent = fleet.agents[0][0]
    rates: dict[str, Rate] = {}
    with Server(base / "repo", base / "state.duckdb") as server:
        token = server.mint_tokens([agent])[agent]
        pulled = httpx.get(
            f"{server.url}{PATH}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        pulled.raise_for_status()
        state = base / "state.duckdb"
        waited = settle(server.pid, state.with_name(state.name + ".site") / "index.html")
        print(f"server settled (site built, CPU quiet) {waited:.1f}s after the first pull")
        body, etag = pulled.content, pulled.headers["etag"]
        print(
            f"serving benchmark: one agent with {len(fleet.canaries)} canaries, config "
            f"{len(body) / 1000:.0f} KB, {arguments.connections} keep-alive connections, "
            f"{arguments.seconds:g} s per phase, a hand-written asyncio client"
        )
        port = int(server.url.rsplit(":", 1)[1])
        for name, tag, expect in (("304", etag, 304), ("200", None, 200)):
            rates[f"reconcile serve {name}"] = measure(
                server.pid,
                port,
                request_bytes(port, token, tag),
                arguments.connections,
                arguments.seconds,
                expect,
            )
    (base / "body.json").write_bytes(body)
    (base / "etag").write_text(etag)
    (base / "bare.py").write_text(BARE_APP)
    bare_port = free_port()
    bare = Process(
        "bare starlette",
        [sys.executable, str(base / "bare.py"), str(base / "body.json"), str(base / "etag"),
         str(bare_port)],
        base / "bare.log",
    )  # fmt: skip
    try:

        def answering() -> bool:
            bare.fail_if_dead()
            try:
                return httpx.get(f"http://127.0.0.1:{bare_port}{PATH}", timeout=5).is_success
            except httpx.HTTPError:
                return False

        wait_until(answering, 30, "the bare Starlette app")
        for name, tag, expect in (("304", etag, 304), ("200", None, 200)):
            rates[f"bare Starlette {name}"] = measure(
                bare.process.pid,
                bare_port,
                request_bytes(bare_port, token, tag),
                arguments.connections,
                arguments.seconds,
                expect,
            )
    finally:
        bare.stop()
    for name, rate in rates.items():
        print(f"{name:<22} {rate.per_second:>9,.0f} req/s {rate.cpu_us:>8.0f} µs server CPU each")
    ours = rates["reconcile serve 304"]
    verdicts = (
        ("304 rate", ours.per_second >= TARGET_304_PER_SECOND,
         f"{ours.per_second:,.0f} req/s, target >= {TARGET_304_PER_SECOND:,}"),
        ("CPU per 304", ours.cpu_us <= TARGET_CPU_PER_304_US,
         f"{ours.cpu_us:.0f} µs, target <= {TARGET_CPU_PER_304_US:g}"),
    )  # fmt: skip
    for what, ok, detail in verdicts:
        print(f"{'PASS' if ok else 'MISS'}: {what} {detail}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless something failed outright (PASS or MISS)."""
    arguments = parse_arguments(argv)
    with workspace(arguments.keep, "reconcile-serving-bench-") as base:
        run(arguments, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
