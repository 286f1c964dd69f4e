"""How much CPU an idle `reconcile serve` uses: 50 routes, 100 agents, no traffic.

Starts a real server on a generated repository, waits until it has settled (the first
revision applied, every canary run started, the first site build out, then `--settle`
seconds), then reads its CPU
time from /proc/<pid>/stat over a window and prints the share of one CPU beside the target.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
from harness import (
    Sampler,
    Server,
    add_keep_option,
    agent_doc,
    cpu_seconds,
    documents,
    http_canary_doc,
    init_repo,
    region_doc,
    wait_until,
    workspace,
    write_file,
)

TARGET_PERCENT = 2.0


def route_doc(index: int) -> str:
    """A route with three groups and a canary that starts by itself and waits for traffic
    (backends are host:port only, nothing listening: a path would keep it off nginx)."""
    name = f"svc-{index:03d}"
    return (
        "apiVersion: canary-reconciler/v1\nkind: Route\nmetadata:\n"
        f"  name: {name}\nspec:\n  path: /{name}\n  path_prefix: true\n  traffic_split:\n"
        f"    - name: stable\n      weight: 80\n      backends:\n"
        f"        - url: http://127.0.0.1:{10000 + 3 * index}\n"
        f"    - name: beta\n      weight: 10\n      backends:\n"
        f"        - url: http://127.0.0.1:{10001 + 3 * index}\n"
        f"    - name: canary\n      weight: 10\n      backends:\n"
        f"        - url: http://127.0.0.1:{10002 + 3 * index}\n"
        "  canary:\n    canary_group: canary\n    auto_start: true\n    steps:\n"
        "      - weight: 10\n        pause: 5m\n      - weight: 50\n        pause: 10m\n"
        "      - weight: 100\n"
        "    analysis:\n      error_threshold: 0.05\n      latency_threshold: 500ms\n"
        "      max_failures: 3\n      min_requests: 50\n      interval: 30s\n"
        "      progress_deadline: 1h\n"
    )


def generate(repo: Path, routes: int, agents: int, canaries: int) -> None:
    """Regions of ten agents each, `canaries` canaries on every agent, `routes` routes."""
    regions = [f"region-{r:02d}" for r in range((agents + 9) // 10)]
    write_file(repo / "regions.yaml", documents(region_doc(r) for r in regions))
    write_file(
        repo / "agents.yaml",
        documents(agent_doc(f"agent-{a:03d}", regions[a // 10]) for a in range(agents)),
    )
    for c in range(canaries):
        text = http_canary_doc(
            f"check-{c:02d}",
            "default",
            schedule="@every 30s",
            selector="['*']",
            check="home",
            url=f"http://127.0.0.1:9/{c}",
        )
        write_file(repo / "canaries" / f"check-{c:02d}.yaml", text)
    for index in range(routes):
        write_file(repo / "routes" / f"svc-{index:03d}.yaml", route_doc(index))
    init_repo(repo)


def settle(server: Server, state: Path, routes: int) -> None:
    """Wait until every route's canary run has started and the first site build is out."""

    def started() -> bool:
        views = httpx.get(f"{server.url}/canary", timeout=10).json()["canaries"]
        return len(views) == routes and all(v["state"] == "progressing" for v in views)

    site = state.with_name(state.name + ".site") / "index.html"
    wait_until(started, 120, "every canary run to start")
    wait_until(site.exists, 120, "the first status site build")


def measure(pid: int, seconds: float) -> float:
    """Percent of one CPU the process used over `seconds`."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(pid), time.monotonic() - started
    if before is None or after is None:
        raise SystemExit("bench: the server exited while it was measured")
    return 100.0 * (after - before) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--canaries", type=int, default=10, help="canaries on every agent")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds more once every run started and the site was built",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--gateway", choices=["none", "nginx"], default="none")
    parser.add_argument("--py-spy", type=int, metavar="RATE", help="also sample with py-spy")
    add_keep_option(parser)
    args = parser.parse_args()
    with workspace(args.keep, "bench-idle-") as work:
        repo, state = work / "repo", work / "state.duckdb"
        generate(repo, args.routes, args.agents, args.canaries)
        extra = ["--gateway", args.gateway]
        if args.gateway == "nginx":
            from harness import free_port

            extra += ["--gateway-listen", f"127.0.0.1:{free_port()}"]
        with Server(repo, state, extra=extra) as server:
            print(
                f"reconcile serve: {args.routes} routes, {args.agents} agents, "
                f"{args.canaries * args.agents} derived canaries, gateway {args.gateway}; "
                f"ready in {server.startup:.1f}s"
            )
            settle(server, state, args.routes)
            time.sleep(args.settle)  # what the last start-up step queued finishes
            sampler = Sampler(server.pid, work / "idle.pyspy", args.py_spy) if args.py_spy else None
            percent = measure(server.pid, args.seconds)
            if sampler is not None:
                sampler.stop()
                profile = sampler.read(lambda f: False, lambda f: "reconciler" in f)
                if profile is not None:
                    print("\n".join(profile.lines(15, "own:", "inclusive (reconciler):")))
            server.process.fail_if_dead()
        verdict = "PASS" if percent <= TARGET_PERCENT else "MISS"
        print(
            f"idle CPU over {args.seconds:.0f}s: {percent:.2f}% of one CPU "
            f"(target <= {TARGET_PERCENT:g}%) {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
