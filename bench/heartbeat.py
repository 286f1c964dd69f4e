"""Heartbeat pings through a real `reconcile serve`: latency, throughput, unknown tokens, and
the CPU the missed-deadline watchdog costs while nothing pings."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx
from harness import (
    ADMIN_TOKEN,
    Server,
    add_keep_option,
    cpu_seconds,
    document,
    documents,
    init_repo,
    percentile,
    workspace,
    write_file,
)

# A job's ping is one state write (its last ping) and one result row through the group commit.
TARGET_P95_MS = 50.0
# An unknown token is a SHA-256 and a dictionary lookup: it must stay cheap to be ignored.
TARGET_UNKNOWN_P50_MS = 5.0
# The watchdog looks every second at every heartbeat with a token.
TARGET_IDLE_CPU_PERCENT = 2.0


def write_config(repo: Path, canaries: int, per_canary: int) -> list[tuple[str, str]]:
    """`canaries` heartbeat canaries of `per_canary` heartbeats each; their (canary, check)."""
    keys, texts = [], []
    for index in range(canaries):
        beats = "".join(
            f"    - name: job-{n}\n      period: 1h\n      grace: 5m\n" for n in range(per_canary)
        )
        texts.append(document("Canary", f"cron-{index}", f"  heartbeat:\n{beats}"))
        keys += [(f"default/cron-{index}", f"job-{n}") for n in range(per_canary)]
    write_file(repo / "canaries.yaml", documents(texts))
    init_repo(repo)
    return keys


async def mint(client: httpx.AsyncClient, keys: list[tuple[str, str]]) -> list[str]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tokens = []
    for canary, check in keys:
        answer = await client.post(
            "/operator/heartbeats/token", json={"canary": canary, "check": check}, headers=headers
        )
        if answer.status_code != 201:
            raise SystemExit(f"bench: minting {canary} {check}: {answer.text}")
        tokens.append(str(answer.json()["token"]))
    return tokens


async def ping_all(
    client: httpx.AsyncClient, paths: list[str], concurrency: int, expect: int
) -> tuple[list[float], float]:
    """Each path once, `concurrency` at a time: latencies (ms) and the wall time (s)."""
    queue = list(reversed(paths))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            path = queue.pop()
            started = time.perf_counter()
            answer = await client.get(path)
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != expect:
                raise SystemExit(f"bench: {path[:40]}… answered {answer.status_code}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def measure(server: Server, keys: list[tuple[str, str]], concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        tokens = await mint(client, keys)
        pings = [f"/api/v1/heartbeat/{token}" for token in tokens]
        half = len(pings) // 2
        one, _ = await ping_all(client, pings[:half], 1, 200)
        many, wall = await ping_all(client, pings[half:], concurrency, 200)
        unknown = [f"/api/v1/heartbeat/crh_{n:043d}" for n in range(len(pings))]
        alone, _ = await ping_all(client, unknown[:half], 1, 404)
        refused, refused_wall = await ping_all(client, unknown, concurrency, 404)
        # The same requests' cost without heartbeats: the server's cheapest route.
        _, health_wall = await ping_all(client, ["/healthz"] * len(unknown), concurrency, 200)
    p50, p95 = percentile(one, 0.5), percentile(one, 0.95)
    print(f"one at a time ({len(one)} pings): p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          f"(target p95 < {TARGET_P95_MS:g} ms) {verdict(p95 < TARGET_P95_MS)}")  # fmt: skip
    print(f"{concurrency} at a time ({len(many)} pings): {len(many) / wall:.0f} pings/s, "
          f"p95 {percentile(many, 0.95):.1f} ms")  # fmt: skip
    unknown_p50 = percentile(alone, 0.5)
    cheap = unknown_p50 < TARGET_UNKNOWN_P50_MS
    print(f"unknown tokens one at a time ({len(alone)}): p50 {unknown_p50:.1f} ms "
          f"(target < {TARGET_UNKNOWN_P50_MS:g} ms) {verdict(cheap)}; "
          f"{concurrency} at a time: {len(refused) / refused_wall:.0f}/s "
          f"(GET /healthz: {len(refused) / health_wall:.0f}/s)")  # fmt: skip


def idle_cpu(server: Server, seconds: float) -> float:
    """The server's CPU, in percent of one core, over `seconds` without requests."""
    before = cpu_seconds(server.pid)
    time.sleep(seconds)
    after = cpu_seconds(server.pid)
    if before is None or after is None:
        raise SystemExit("bench: the server's CPU time cannot be read (/proc)")
    return (after - before) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--canaries", type=int, default=100, help="heartbeat canaries (100)")
    parser.add_argument("--per-canary", type=int, default=10, help="heartbeats each (10)")
    parser.add_argument("--concurrency", type=int, default=20, help="requests at once (20)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU (20)")
    add_keep_option(parser)
    args = parser.parse_args()
    with workspace(args.keep, "bench-heartbeat-") as root:
        keys = write_config(root / "config", args.canaries, args.per_canary)
        print(f"{len(keys)} heartbeats in {args.canaries} canaries")
        with Server(root / "config", root / "state.duckdb") as server:
            asyncio.run(measure(server, keys, args.concurrency))
            cpu = idle_cpu(server, args.idle)
            print(f"idle with {len(keys)} heartbeats with tokens: {cpu:.2f}% of a core over "
                  f"{args.idle:g} s (target < {TARGET_IDLE_CPU_PERCENT:g}%) "
                  f"{verdict(cpu < TARGET_IDLE_CPU_PERCENT)}")  # fmt: skip


if __name__ == "__main__":
    main()
