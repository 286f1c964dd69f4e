"""Commit -> agent running the new config, with default settings; held pulls cost memory only.

    .venv/bin/python bench/push.py                  # 20 commits each way, 2,000 held pulls
    .venv/bin/python bench/push.py --commits 5 --held 200

1. **File watcher**: `reconcile serve` on a working tree, one real `agent run` with its
   default settings (held pulls of 30 s, a pull interval of 30 s). Each commit adds a
   canary; the time is from the end of `git commit` until the agent's status endpoint shows
   one more canary scheduled.
2. **Webhook**: the same against a bare repository the server mirrors (`--poll-interval
   3600`, so only the webhook can bring a commit): each commit is pushed, then a signed
   `POST /hooks/git` is sent; the time runs from the push.
3. **Held pulls**: N connections each holding `GET /api/agent/targets?wait=60` with the
   current ETag; the server's CPU over 10 s and its resident memory, before and while held.

Targets (issue "Speed where users feel it"): median <= 1 s and worst <= 2 s over the commits,
each way; held pulls cost memory, not CPU (reported, with the CPU of the idle server beside).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from harness import (
    Process,
    Server,
    add_keep_option,
    agent_doc,
    commit_all,
    cpu_seconds,
    free_port,
    git,
    http_canary_doc,
    init_repo,
    region_doc,
    wait_until,
    workspace,
    write_file,
)

MEDIAN_TARGET, WORST_TARGET = 1.0, 2.0
WEBHOOK_SECRET = "bench-push-secret"
GIVE_UP_SECONDS = 90.0
POLL_SECONDS = 0.005
CPU_WINDOW = 10.0


def write_canary(repo: Path, index: int) -> None:
    text = http_canary_doc(
        f"web-{index}", "default", schedule="@every 1h", selector="['*']", check="check",
        url=f"https://example.com/{index}",
    )  # fmt: skip
    write_file(repo / "canaries" / f"web-{index}.yaml", text)


def seed(repo: Path) -> None:
    write_file(repo / "regions.yaml", region_doc("eu"))
    write_file(repo / "agents.yaml", agent_doc("eu-1", "eu"))
    write_canary(repo, 0)
    init_repo(repo, "seed")


class Agent:
    """`agent run` with its default pull settings; its status endpoint on a free port."""

    def __init__(self, url: str, token: str, base: Path, name: str) -> None:
        self.port = free_port()
        env = {"PATH": "/usr/bin:/bin", "RECONCILER_URL": url, "AGENT_TOKEN": token}
        command = [
            sys.executable, "-m", "agent", "run", "--spool", str(base / f"{name}.sqlite"),
            "--listen", f"127.0.0.1:{self.port}", "--log-format", "json",
        ]  # fmt: skip
        self.process = Process(f"agent {name}", command, base / f"{name}.log", env=env)
        self.status = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def canaries(self) -> int:
        self.process.fail_if_dead()
        try:
            text = self.status.get("/metrics").text
        except httpx.HTTPError:
            return -1
        for line in text.splitlines():
            if line.startswith("agent_canaries "):
                return int(float(line.split()[1]))
        return -1

    def stop(self) -> None:
        self.status.close()
        self.process.stop()


def time_commits(
    repo: Path, agent: Agent, commits: int, deliver: Callable[[int], None]
) -> list[float]:
    samples = []
    for index in range(1, commits + 1):
        wait_until(lambda i=index: agent.canaries() == i, GIVE_UP_SECONDS, "the agent in step")
        write_canary(repo, index)
        commit_all(repo, f"add canary {index}")
        started = time.perf_counter()
        deliver(index)
        wait_until(
            lambda i=index: agent.canaries() == i + 1,
            GIVE_UP_SECONDS,
            f"commit {index} running on the agent",
            interval=POLL_SECONDS,
        )
        samples.append(time.perf_counter() - started)
    return samples


def via_watcher(base: Path, commits: int) -> list[float]:
    repo = base / "watched"
    seed(repo)
    with Server(repo, base / "watched.duckdb") as server:
        token = server.mint_tokens(["eu-1"])["eu-1"]
        agent = Agent(server.url, token, base, "watched-agent")
        try:
            return time_commits(repo, agent, commits, lambda _index: None)
        finally:
            agent.stop()


def via_webhook(base: Path, commits: int) -> list[float]:
    work, bare = base / "work", base / "bare.git"
    seed(work)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    git(work, "remote", "add", "origin", str(bare))
    env = {"RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET}
    extra = ("--poll-interval", "3600")
    with Server(bare, base / "hooked.duckdb", env=env, extra=extra) as server:
        token = server.mint_tokens(["eu-1"])["eu-1"]
        agent = Agent(server.url, token, base, "hooked-agent")
        client = httpx.Client(base_url=server.url, timeout=10)

        def deliver(index: int) -> None:
            git(work, "push", "-q", "origin", "HEAD:main")
            body = f'{{"ref": "refs/heads/main", "push": {index}}}'.encode()
            signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            answer = client.post(
                "/hooks/git", content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"}
            )
            if answer.status_code != 202:
                raise SystemExit(f"bench: webhook refused: {answer.status_code} {answer.text}")

        try:
            return time_commits(work, agent, commits, deliver)
        finally:
            client.close()
            agent.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU over `seconds`, as a share of one CPU."""
    before = cpu_seconds(pid) or 0.0
    time.sleep(seconds)
    return ((cpu_seconds(pid) or 0.0) - before) / seconds


async def hold(url: str, token: str, etag: str, count: int, ready: asyncio.Event) -> int:
    """Open `count` connections each holding a pull; return how many were held."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /api/agent/targets?wait=60 HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nIf-None-Match: {etag}\r\n\r\n"
    ).encode()
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        writers.append((reader, writer))
    await asyncio.sleep(1)  # let the server read them all
    ready.set()
    await asyncio.sleep(CPU_WINDOW + 2)

    async def still_held(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(1), 0.05)
        except TimeoutError:
            return True
        return False

    held = sum(await asyncio.gather(*(still_held(reader) for reader, _ in writers)))
    for _, writer in writers:
        writer.close()
    return held


def held_pulls(base: Path, count: int) -> dict[str, float]:
    repo = base / "held"
    seed(repo)
    extra = ("--max-connections", str(count + 100))
    with Server(repo, base / "held.duckdb", extra=extra) as server:
        token = server.mint_tokens(["eu-1"])["eu-1"]
        etag = httpx.get(
            f"{server.url}/api/agent/targets", headers={"Authorization": f"Bearer {token}"}
        ).headers["etag"]
        time.sleep(2)  # settle after start
        idle_cpu, idle_rss = cpu_over(server.pid, CPU_WINDOW), rss_mib(server.pid)

        async def measure() -> tuple[int, float, float]:
            ready = asyncio.Event()
            task = asyncio.create_task(hold(server.url, token, etag, count, ready))
            await ready.wait()
            cpu = await asyncio.to_thread(cpu_over, server.pid, CPU_WINDOW)
            rss = rss_mib(server.pid)
            return await task, cpu, rss

        held, cpu, rss = asyncio.run(measure())
    return {"idle_cpu": idle_cpu, "idle_rss": idle_rss, "held": held, "cpu": cpu, "rss": rss}


def verdict(samples: list[float]) -> str:
    ok = statistics.median(samples) <= MEDIAN_TARGET and max(samples) <= WORST_TARGET
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--held", type=int, default=2000, help="held pulls to open (default 2000)")
    add_keep_option(parser)
    args = parser.parse_args()
    with workspace(args.keep, "reconcile-push-") as base:
        watcher = via_watcher(base, args.commits)
        webhook = via_webhook(base, args.commits)
        held = held_pulls(base, args.held)
    print(
        f"\ncommit -> agent running the new config, default agent settings, {args.commits} commits"
    )
    print(f"{'source':<14} {'median':>8} {'worst':>8}  target (median / worst)  result")
    for name, samples in (("file watcher", watcher), ("webhook", webhook)):
        print(
            f"{name:<14} {statistics.median(samples):>7.2f}s {max(samples):>7.2f}s  "
            f"<= {MEDIAN_TARGET:.0f} s / <= {WORST_TARGET:.0f} s        {verdict(samples)}"
        )
    print(
        f"\nheld pulls: {held['held']:.0f} of {args.held} held; server CPU "
        f"{held['cpu'] * 100:.1f}% of one core while held vs {held['idle_cpu'] * 100:.1f}% idle; "
        f"RSS {held['rss']:.0f} MiB vs {held['idle_rss']:.0f} MiB idle "
        f"({(held['rss'] - held['idle_rss']) * 1024 / max(1, held['held']):.0f} KiB per held pull)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
