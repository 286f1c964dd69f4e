"""Per-check CPU of the icmp, multihttp and grpc checks at a steady rate, beside HTTP checks.

The agent's own check code (`agent.checks.run_check` with the agent's `ClientPool`) runs on
one uvloop event loop in this process, as in `agent run`; the targets run in processes of
their own so their CPU is not counted: an asyncio HTTP responder (every path answers one
JSON document that satisfies the three-step flow) and a gRPC server answering SERVING;
icmp pings 127.0.0.1. Each phase launches checks at fixed rates for a window and reports the
CPU this process spent per check, and how late each launch started against its plan
(p99) — the same lateness the agent's scheduler reports, without its pull and ship loops.

    .venv/bin/python bench/checks_load.py                  # every phase, 20 s windows
    .venv/bin/python bench/checks_load.py --seconds 10 --phases icmp,grpc
    .venv/bin/python bench/checks_load.py --browser        # browser checks at 1/s too

With `--browser` the phases `browser` and `http+browser` are added: a browser check loads the
HTTP responder's page in Chromium once a second. Its CPU is mostly spent in other processes
(Playwright's driver, Chromium's browser and renderer processes), so the CPU of this
process's whole tree of children is counted too (from /proc, Linux only), after one warm-up
run that starts Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.checks import ClientPool, run_check  # noqa: E402
from agent.checks.browser_check import (  # noqa: E402
    BrowserPolicy,
    allow_browser_checks,
    default_browser_path,
)

BODY = b'{"token": "t-1", "orders": [{"id": 42, "state": "paid"}], "state": "paid"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
TARGET_DRIFT_SECONDS = 0.100
# The targets' processes: children of this one, but their CPU is not the agent's.
TARGET_PIDS: set[int] = set()
RATES = {"http": 600.0, "icmp": 500.0, "multihttp": 100.0, "grpc": 500.0, "browser": 1.0}


# -- targets, each in its own process ---------------------------------------------------------


class _Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.seen = b""

    def data_received(self, data: bytes) -> None:
        self.seen += data
        head, separator, rest = self.seen.partition(b"\r\n\r\n")
        if not separator:
            return
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if len(rest) >= length:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


def serve_http(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Responder, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    import uvloop

    uvloop.run(main())


def serve_grpc(port: int) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def main() -> None:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling a port that is not open yet; nothing to wait on instead
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# -- checks ------------------------------------------------------------------------------------


def check_of(kind: str, http_port: int, grpc_port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{http_port}"
    if kind == "http":
        return {"name": "h", "type": "http", "timeout_ms": 5000, "url": f"{base}/health"}
    if kind == "icmp":
        return {
            "name": "p",
            "type": "icmp",
            "timeout_ms": 5000,
            "endpoint": "127.0.0.1",
            "packetCount": 1,
        }
    if kind == "browser":
        return {"name": "b", "type": "browser", "timeout_ms": 10_000, "url": f"{base}/"}
    if kind == "grpc":
        return {
            "name": "g",
            "type": "grpc",
            "timeout_ms": 5000,
            "endpoint": f"127.0.0.1:{grpc_port}",
        }
    status = {"type": "TEXT", "subject": "HTTP_STATUS_CODE", "condition": "EQUALS", "value": "200"}
    return {
        "name": "m",
        "type": "multihttp",
        "timeout_ms": 5000,
        "entries": [
            {
                "request": {"method": "POST", "url": f"{base}/login", "body": '{"u": 1}'},
                "assertions": [status],
                "variables": [{"name": "token", "type": "JSON_PATH", "expression": "$.token"}],
            },
            {
                "request": {
                    "url": f"{base}/orders",
                    "headers": [{"name": "Authorization", "value": "Bearer ${token}"}],
                },
                "assertions": [{"type": "JSON_PATH_ASSERTION", "expression": "$.orders[0].id"}],
                "variables": [
                    {"name": "order", "type": "JSON_PATH", "expression": "$.orders[0].id"}
                ],
            },
            {
                "request": {"url": f"{base}/orders/${{order}}"},
                "assertions": [
                    {
                        "type": "JSON_PATH_VALUE",
                        "expression": "$.state",
                        "condition": "EQUALS",
                        "value": "paid",
                    }
                ],
            },
        ],
    }


@dataclass
class Stream:
    """Launches of one check type at a fixed rate and what came of them."""

    kind: str
    rate: float
    lateness: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)


async def _launch(
    stream: Stream, check: dict[str, Any], pool: ClientPool, until: float, tasks: set[Any]
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    index = 0
    now = lambda: datetime.now(UTC)  # noqa: E731
    while True:
        planned = start + index / stream.rate
        if planned >= until:
            return
        delay = planned - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stream.lateness.append(max(0.0, loop.time() - planned))
        task = asyncio.ensure_future(run_check(check, pool, now))
        tasks.add(task)

        def done(finished: asyncio.Future[Any], s: Stream = stream) -> None:
            tasks.discard(finished)
            outcome = finished.result()
            s.statuses[outcome.status] = s.statuses.get(outcome.status, 0) + 1
            if outcome.status != "pass":
                key = (outcome.message or "")[:80]
                s.messages[key] = s.messages.get(key, 0) + 1

        task.add_done_callback(done)
        index += 1


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Phase:
    name: str
    seconds: float
    cpu: float
    streams: list[Stream]
    own_cpu: float = 0.0  # this process alone (differs from `cpu` for browser phases)


async def run_phase(
    name: str, kinds: Sequence[str], seconds: float, http_port: int, grpc_port: int
) -> Phase:
    async with ClientPool(trust_env=False) as pool:
        tasks: set[Any] = set()
        streams = [Stream(kind, RATES[kind]) for kind in kinds]
        loop = asyncio.get_running_loop()
        clock = time.process_time
        if "browser" in kinds:
            allow_browser_checks(pool, BrowserPolicy(True, default_browser_path()))
            warm = await run_check(check_of("browser", http_port, grpc_port), pool, _utc_now)
            print(f"  (warm-up browser run: {warm.status} {warm.message or ''})")
            clock = _tree_cpu
        cpu0, own0, wall0 = clock(), time.process_time(), time.perf_counter()
        until = loop.time() + seconds
        await asyncio.gather(
            *(
                _launch(s, check_of(s.kind, http_port, grpc_port), pool, until, tasks)
                for s in streams
            )
        )
        while tasks:
            await asyncio.wait(set(tasks))
        cpu, wall = clock() - cpu0, time.perf_counter() - wall0
    return Phase(name, wall, cpu, streams, time.process_time() - own0)


def _tree_cpu() -> float:
    """CPU seconds of this process and every live descendant (Linux /proc; else our own)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in times.items():
        ancestor = pid
        while ancestor > 1 and ancestor != me and ancestor not in TARGET_PIDS:
            ancestor = parents.get(ancestor, 0)
        if ancestor == me:
            total += cpu
    return total or time.process_time()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0


def report(phase: Phase, baseline_cpu_per_s: float | None) -> None:
    runs = sum(sum(s.statuses.values()) for s in phase.streams)
    print(f"\n## {phase.name}  ({phase.seconds:.1f}s, {phase.cpu:.2f} CPU s, {runs} checks)")
    if "browser" in phase.name:
        print(f"  of which the bench process (the agent's event loop): {phase.own_cpu:.2f} CPU s")
    for stream in phase.streams:
        done = sum(stream.statuses.values())
        print(
            f"  {stream.kind:9s} {done / phase.seconds:7.1f}/s  statuses {stream.statuses}  "
            f"lateness p99 {p99(stream.lateness) * 1000:6.1f} ms  "
            f"max {max(stream.lateness, default=0) * 1000:6.1f} ms"
        )
        for message, count in sorted(stream.messages.items(), key=lambda m: -m[1])[:3]:
            print(f"      {count} x {message}")
    if len(phase.streams) == 1:
        done = sum(phase.streams[0].statuses.values())
        print(f"  CPU per check: {phase.cpu / max(done, 1) * 1000:.3f} ms")
    elif baseline_cpu_per_s is not None:
        extra = phase.streams[1]
        done = sum(extra.statuses.values())
        added = phase.cpu - baseline_cpu_per_s * phase.seconds
        print(f"  CPU above HTTP alone: {added:.2f} s = {added / max(done, 1) * 1000:.3f} ms per "
              f"{extra.kind} check")  # fmt: skip
    http = next((s for s in phase.streams if s.kind == "http"), None)
    if http is not None and len(phase.streams) > 1:
        drift = p99(http.lateness)
        verdict = "PASS" if drift <= TARGET_DRIFT_SECONDS else "MISS"
        print(f"  {verdict}: HTTP lateness p99 {drift * 1000:.1f} ms (target <= 100 ms)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="window of each phase")
    parser.add_argument(
        "--phases",
        default="http,icmp,multihttp,grpc,http+icmp,http+multihttp,http+grpc",
        help="comma-separated: a type alone, or http+TYPE beside 600 HTTP checks/s",
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="also run the browser phases (browser at 1/s alone and beside HTTP; needs Chromium)",
    )
    parser.add_argument("--serve-grpc", type=int, metavar="PORT", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.serve_grpc is not None:  # agent_load.py's gRPC target
        with contextlib.suppress(KeyboardInterrupt):
            serve_grpc(arguments.serve_grpc)
        return 0
    http_port, grpc_port = free_port(), free_port()
    context = multiprocessing.get_context("spawn")
    targets = [
        context.Process(target=serve_http, args=(http_port,), daemon=True),
        context.Process(target=serve_grpc, args=(grpc_port,), daemon=True),
    ]
    for target in targets:
        target.start()
        TARGET_PIDS.add(target.pid or 0)
    try:
        wait_listening(http_port)
        wait_listening(grpc_port)
        print(f"# checks_load: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        import uvloop

        baseline: float | None = None
        phases = arguments.phases.split(",")
        if arguments.browser:
            phases += [p for p in ("browser", "http+browser") if p not in phases]
        for name in phases:
            kinds = name.split("+")
            phase = uvloop.run(run_phase(name, kinds, arguments.seconds, http_port, grpc_port))
            if kinds == ["http"]:
                baseline = phase.cpu / phase.seconds
            report(phase, baseline)
    finally:
        for target in targets:
            target.terminate()
            target.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
