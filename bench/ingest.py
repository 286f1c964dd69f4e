"""Benchmark result ingest end to end: a real `reconcile serve` and concurrent agents posting."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import orjson
from harness import (
    NO_SAMPLES,
    Sampler,
    Server,
    add_keep_option,
    agent_doc,
    cpu_seconds,
    documents,
    http_canary_doc,
    init_repo,
    percentile,
    region_doc,
    wait_until,
    workspace,
    write_file,
)

TARGET_ROWS_PER_SECOND = 100_000
TARGET_CPU_PER_ROW_US = 8.0  # server CPU per accepted row
SERVER_STOP_SECONDS = 120.0  # the server stores every accepted row before it exits
PY_SPY_RATE = 200
NAMESPACES = ("web", "payments", "identity", "search", "platform")


# ---------------------------------------------------------------------------------------------
# The config repository
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What the generated repository declares: agents (with regions) and canary ids."""

    agents: list[tuple[str, str]]
    canaries: list[str]  # namespace/name
    check: str = "health"


def write_repo(root: Path, regions: int, agents: int, canaries: int) -> Fleet:
    """Regions, agents spread over them, canaries on every agent (`['*']`), one http check each;
    committed with `git init`."""
    region_names = [f"region-{index}" for index in range(regions)]
    members = [(f"agent-{index:02d}", region_names[index % regions]) for index in range(agents)]
    write_file(root / "regions.yaml", documents(region_doc(name) for name in region_names))
    write_file(
        root / "agents.yaml",
        documents(agent_doc(name, region) for name, region in members),
    )
    ids = []
    for index in range(canaries):
        namespace, name = NAMESPACES[index % len(NAMESPACES)], f"service-{index:03d}"
        text = http_canary_doc(
            name,
            namespace,
            schedule="@every 30s",
            selector="['*']",
            check="health",
            url=f"https://{name}.{namespace}.example.com/health",
        )
        write_file(root / "canaries" / namespace / f"{name}.yaml", text)
        ids.append(f"{namespace}/{name}")
    init_repo(root)
    return Fleet(members, ids)


# ---------------------------------------------------------------------------------------------
# What the server says about itself
# ---------------------------------------------------------------------------------------------


def handling_time(url: str) -> tuple[int, float]:
    """Requests to /api/agent/results and their summed in-server time, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    count = total = 0.0
    for line in text.splitlines():
        if 'route="/api/agent/results"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("reconciler_http_request_duration_seconds_count"):
            count += float(value)
        elif name.startswith("reconciler_http_request_duration_seconds_sum"):
            total += float(value)
    return int(count), total


def counter_total(url: str, name: str) -> float:
    """The sum of a counter's series on /metrics (0 when it has none yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"reconciler_{name}{{", f"reconciler_{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


GROUP_COMMIT = ("ingest_inserts_total", "ingest_insert_requests_total", "ingest_insert_rows_total")


def group_commit(url: str) -> tuple[float, ...]:
    """Inserts, requests and rows the ingest writer has stored, from /metrics."""
    return tuple(counter_total(url, name) for name in GROUP_COMMIT)


def settle(pid: int, site: Path) -> float:
    """Wait for the first status site build, then for the server's CPU to go quiet (under
    5 % of a CPU over half a second): start-up work must not count as serving. The seconds."""
    started = time.perf_counter()
    wait_until(site.exists, 300, "the first status site build")

    def quiet() -> bool:
        before, at = cpu_seconds(pid), time.perf_counter()
        time.sleep(0.5)  # the sampling window, not a wait for a condition
        after = cpu_seconds(pid)
        busy = (after or 0.0) - (before or 0.0)
        return busy / (time.perf_counter() - at) < 0.05

    wait_until(quiet, 300, "the server to go quiet")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One request: whose token it carries, its rows pre-encoded, how many rows."""

    agent: str
    rows: bytes
    size: int


def make_batches(fleet: Fleet, count: int, size: int, now: datetime) -> list[Batch]:
    """`count` batches of `size` valid rows, each batch from one agent about its own canaries.

    Every row gets its own started_at, 50 µs apart (600,000 rows span 30 s, so every row is
    within the last minute when it is sent), so no two rows share an identity.
    """
    batches, serial = [], 0
    step = timedelta(microseconds=50)
    newest = now - timedelta(seconds=1)
    for index in range(count):
        agent = fleet.agents[index % len(fleet.agents)][0]
        rows = []
        for position in range(size):
            canary = fleet.canaries[(index + position) % len(fleet.canaries)]
            failed = serial % 97 == 0
            rows.append(
                {
                    "canary": f"{canary}@{agent}",
                    "check": fleet.check,
                    "started_at": (newest - serial * step).isoformat(),
                    "duration_ms": 20.0 + serial % 180,
                    "status": "fail" if failed else "pass",
                    "code": 503 if failed else 200,
                    "message": "unexpected status 503" if failed else None,
                    "phases": {
                        "connect_ms": 1.5,
                        "tls_ms": 4.0,
                        "first_byte_ms": 15.0 + serial % 170,
                        "total_ms": 20.0 + serial % 180,
                    },
                }
            )
            serial += 1
        batches.append(Batch(agent, orjson.dumps(rows), size))
    return batches


def body(batch: Batch) -> bytes:
    """The request body: the pre-encoded rows plus the agent's clock now."""
    sent_at = orjson.dumps(datetime.now(UTC).isoformat())
    return b'{"sent_at":' + sent_at + b',"results":' + batch.rows + b"}"


@dataclass
class Run:
    """What the clients saw."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    rows: int = 0
    first_send: float = float("inf")
    last_response: float = 0.0

    @property
    def wall(self) -> float:
        return max(0.0, self.last_response - self.first_send)


async def post_all(
    url: str, tokens: dict[str, str], batches: Sequence[Batch], clients: int, deadline: float
) -> Run:
    """Send the batches from `clients` concurrent tasks, each with its own one-connection
    AsyncClient; no new batch starts after `deadline` (a perf_counter time)."""
    run, queue = Run(), iter(batches)
    headers = {agent: {"Authorization": f"Bearer {token}"} for agent, token in tokens.items()}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client_task(client: httpx.AsyncClient) -> None:
        async with client:
            for batch in queue:
                if time.perf_counter() > deadline:
                    return
                content = body(batch)
                started = time.perf_counter()
                run.first_send = min(run.first_send, started)
                try:
                    response = await client.post(
                        "/api/agent/results", content=content, headers=headers[batch.agent]
                    )
                except httpx.HTTPError as error:
                    run.errors[type(error).__name__] += 1
                    continue
                finished = time.perf_counter()
                run.last_response = max(run.last_response, finished)
                run.latencies.append(finished - started)
                run.batches += 1
                run.rows += batch.size
                if response.status_code != 200:
                    run.errors[f"HTTP {response.status_code}"] += 1
                    continue
                outcome = orjson.loads(response.content)
                run.accepted += outcome["accepted"]
                run.duplicates += outcome["duplicates"]
                run.dropped.update(outcome["dropped"])

    # Clients are made before the first send: building one (its TLS context) is not load.
    pool = [httpx.AsyncClient(base_url=url, limits=limits, timeout=60) for _ in range(clients)]
    await asyncio.gather(*(client_task(client) for client in pool))
    return run


def stored_rows(state: Path) -> int:
    """Rows in the results table, read after the server has released the file."""
    with duckdb.connect(str(state), read_only=True) as connection:
        found = connection.execute("SELECT count(*) FROM results").fetchone()
    return int(found[0]) if found else 0


WAIT_FRAMES = (
    "_worker (concurrent/futures/thread.py)",
    "WorkerThread.run (anyio/_backends/_asyncio.py)",
    "EpollSelector.select (selectors.py)",
)
OUTER_FRAMES = ("(reconciler/cli/main.py)", "(reconciler/cli/serve.py)", "(reconciler/__main__.py)")


def is_waiting(leaf: str) -> bool:
    """A stack that ends here waits (in a queue or a selector) rather than works."""
    return leaf in WAIT_FRAMES


def is_project_frame(frame: str) -> bool:
    """A frame of the project's own code below the command line's entry points."""
    return "(reconciler/" in frame and not frame.endswith(OUTER_FRAMES)


def sampler_report(sampler: Sampler, top: int) -> str:
    """Busy samples by thread, functions by own samples, project functions inclusive."""
    profile = sampler.read(idle=is_waiting, inclusive=is_project_frame)
    if profile is None:
        return NO_SAMPLES
    busy = profile.busy
    header = (
        f"py-spy, {profile.rate} samples/s: {busy} busy samples (~{busy / profile.rate:.1f} "
        f"thread-seconds, including waits for the GIL), {profile.idle} more blocked in a queue "
        "or selector (left out)"
    )
    own_title = f"top {top} functions by own samples (C calls count in their Python caller):"
    return "\n".join(
        [header, *profile.lines(top, own_title, "project functions by inclusive samples:")]
    )


def profile_report(path: Path, top: int) -> str:
    """The server's cProfile: top entries by own time and by cumulative time."""
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        text.write(f"\n--- server profile, top {top} by {key} ---\n")
        stats.sort_stats(key).print_stats(top)
    return text.getvalue()


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=400, help="batches to send (default 400)")
    parser.add_argument("--batch-size", type=int, default=500, help="rows per batch (500)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--regions", type=int, default=5)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--canaries", type=int, default=50)
    parser.add_argument("--resend", type=int, default=20, help="batches re-sent (20)")
    parser.add_argument(
        "--max-seconds", type=float, default=120, help="stop starting batches after this (120)"
    )
    add_keep_option(parser)
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="start at once, while the server still does its start-up work (site build)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="run the server under cProfile and print its top N entries (slows it down)",
    )
    parser.add_argument(
        "--py-spy",
        type=int,
        default=0,
        metavar="N",
        help="sample the server with py-spy during the timed run; print the top N functions",
    )
    arguments = parser.parse_args(argv)
    if arguments.batch_size * arguments.batches > 600_000:
        parser.error("at most 600,000 rows, so that every started_at is within the last minute")
    return arguments


@dataclass
class Outcome:
    """What the load phase measured and checked."""

    rate: float
    cpu_per_row_us: float
    accepted: int
    clean: bool  # no transport or HTTP errors, no dropped rows
    resend_ok: bool
    sampler: Sampler | None


def drive(arguments: argparse.Namespace, server: Server, fleet: Fleet, base: Path) -> Outcome:
    """Mint tokens, send the batches, re-send some; print what the clients saw."""
    tokens = server.mint_tokens(name for name, _ in fleet.agents)
    print(f"minted {len(tokens)} tokens through POST /operator/agents/NAME/token")
    if not arguments.no_settle:
        site = server.state.with_name(server.state.name + ".site") / "index.html"
        waited = settle(server.pid, site)
        print(f"server settled (first site build out, CPU quiet) in {waited:.1f}s")

    started = time.perf_counter()
    batches = make_batches(fleet, arguments.batches, arguments.batch_size, datetime.now(UTC))
    size = sum(len(b.rows) for b in batches)
    print(
        f"encoded {len(batches)} batches ({len(batches) * arguments.batch_size:,} rows, "
        f"{size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f}s, before timing"
    )

    sampler = Sampler(server.pid, base / "serve.pyspy", PY_SPY_RATE) if arguments.py_spy else None
    deadline = time.perf_counter() + arguments.max_seconds
    grouped = group_commit(server.url)
    server_cpu, own_cpu = cpu_seconds(server.pid), time.process_time()
    run = asyncio.run(post_all(server.url, tokens, batches, arguments.clients, deadline))
    own_cpu = time.process_time() - own_cpu
    server_end = cpu_seconds(server.pid)
    inserts, grouped_requests, inserted_rows = (
        after - before for after, before in zip(group_commit(server.url), grouped, strict=True)
    )
    if sampler is not None:
        sampler.stop()
    requests, in_server = handling_time(server.url)
    rate = run.accepted / run.wall if run.wall else 0.0
    wall = run.wall or float("inf")
    print(
        f"sent {run.batches} batches ({run.rows:,} rows) in {run.wall:.2f}s "
        f"(first send to last response)"
    )
    print(
        f"responses: accepted {run.accepted:,}, duplicates {run.duplicates:,}, "
        f"dropped {dict(run.dropped) or 0}, errors {dict(run.errors) or 0}"
    )
    print(f"throughput: {rate:,.0f} rows/s accepted end to end ({run.batches / wall:.1f} req/s)")
    print(
        "latency per request: "
        + ", ".join(
            f"p{int(q * 100)} {percentile(run.latencies, q) * 1000:.0f} ms"
            for q in (0.5, 0.95, 0.99)
        )
        + f", max {max(run.latencies, default=0) * 1000:.0f} ms"
    )
    if requests:
        print(
            f"in-server time per request (/metrics, middleware to response): "
            f"mean {in_server / requests * 1000:.0f} ms over {requests} requests"
        )
    cpu_per_row = float("inf")
    if server_cpu is not None and server_end is not None and run.wall:
        print(
            f"CPU during the timed run: server {server_end - server_cpu:.1f}s "
            f"({(server_end - server_cpu) / run.wall:.0%} of one CPU), load generator "
            f"{own_cpu:.1f}s ({own_cpu / run.wall:.0%} of one CPU)"
        )
        if run.accepted:
            cpu_per_row = (server_end - server_cpu) / run.accepted * 1e6
            print(f"server CPU per accepted row: {cpu_per_row:.1f} µs")
    if inserts:
        print(
            f"group commit (/metrics): {inserts:.0f} inserts for {grouped_requests:.0f} requests, "
            f"{inserted_rows / inserts:,.0f} rows and {grouped_requests / inserts:.1f} requests "
            "per insert"
        )

    resend_count = min(arguments.resend, len(batches))
    again = asyncio.run(
        post_all(server.url, tokens, batches[:resend_count], arguments.clients, float("inf"))
    )
    expected_duplicates = sum(b.size for b in batches[:resend_count])
    resend_ok = again.accepted == 0 and again.duplicates == expected_duplicates
    print(
        f"re-send of {resend_count} batches: accepted {again.accepted}, duplicates "
        f"{again.duplicates:,} (expected 0 and {expected_duplicates:,}): "
        + ("OK" if resend_ok else "WRONG")
    )

    return Outcome(
        rate,
        cpu_per_row,
        run.accepted + again.accepted,
        not run.errors and not run.dropped and not again.errors,
        resend_ok,
        sampler,
    )


def run_benchmark(arguments: argparse.Namespace, base: Path) -> bool:
    """Generate, serve, load, re-send, stop, count; print the report. True if all checks hold."""
    fleet = write_repo(base / "repo", arguments.regions, arguments.agents, arguments.canaries)
    derived = len(fleet.agents) * len(fleet.canaries)
    print(
        f"ingest benchmark: {arguments.regions} regions, {len(fleet.agents)} agents, "
        f"{len(fleet.canaries)} canaries ({derived:,} derived), {arguments.batches} batches x "
        f"{arguments.batch_size} rows, {arguments.clients} clients (asyncio tasks, one "
        f"httpx.AsyncClient with one connection each)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs shared by the server (one process) and this load "
        "generator (one process)"
    )
    profile = base / "serve.prof" if arguments.profile else None
    server = Server(base / "repo", base / "state.duckdb", profile=profile)
    print(
        f"server ready in {server.startup:.1f}s at {server.url}" + (" (cProfile)" * bool(profile))
    )
    try:
        outcome = drive(arguments, server, fleet, base)
    finally:
        stopping = time.perf_counter()
        code = server.stop(SERVER_STOP_SECONDS)
    print(f"server stopped by SIGTERM in {time.perf_counter() - stopping:.1f}s, exit code {code}")
    stored = stored_rows(server.state)
    stored_ok = stored == outcome.accepted and outcome.clean
    print(
        f"stored rows in the DuckDB file: {stored:,}; accepted in responses: "
        f"{outcome.accepted:,}: " + ("OK" if stored_ok else "WRONG")
    )
    verdict = "PASS" if outcome.rate >= TARGET_ROWS_PER_SECOND else "MISS"
    print(
        f"{verdict}: {outcome.rate:,.0f} rows/s against a target of "
        f"{TARGET_ROWS_PER_SECOND:,} rows/s"
    )
    verdict = "PASS" if outcome.cpu_per_row_us <= TARGET_CPU_PER_ROW_US else "MISS"
    print(
        f"{verdict}: {outcome.cpu_per_row_us:.1f} µs server CPU per row against a target of "
        f"at most {TARGET_CPU_PER_ROW_US:g} µs"
    )
    if outcome.sampler is not None:
        print("\n(py-spy samples the server during the timed run; it slows it a little)")
        print(sampler_report(outcome.sampler, arguments.py_spy))
    if profile is not None:
        print("\n(cProfile slows the server: the throughput above is not comparable)")
        print(profile_report(profile, arguments.profile))
    return outcome.resend_ok and stored_ok and code == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a correctness check fails, 0 otherwise (PASS or MISS)."""
    arguments = parse_arguments(argv)
    with workspace(arguments.keep, "reconcile-ingest-bench-") as base:
        ok = run_benchmark(arguments, base)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
