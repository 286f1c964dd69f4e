"""How long from a signed webhook until an agent's pull returns the new config."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from harness import (
    Server,
    add_keep_option,
    agent_doc,
    commit_all,
    http_canary_doc,
    init_repo,
    region_doc,
    wait_until,
    workspace,
    write_file,
)

TARGET_SECONDS = 2.0
WEBHOOK_SECRET = "bench-webhook-secret"
# Far above the target: a config that never changes is a failure, not a slow sample.
GIVE_UP_SECONDS = 60.0
POLL_SECONDS = 0.005


def write_canary(repo: Path, url: str) -> None:
    """The one canary, checking `url`; a new URL is a new config for the agent."""
    text = http_canary_doc(
        "web", "default", schedule="@every 30s", selector="['*']", check="check", url=url
    )
    write_file(repo / "canary.yaml", text)


def send_webhook(client: httpx.Client, index: int) -> None:
    """POST /hooks/git signed as GitHub signs a push; SystemExit unless it is queued.

    Each push's body differs (the server refuses the same signed body twice).
    """
    body = f'{{"ref": "refs/heads/main", "push": {index}}}'.encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post(
        "/hooks/git", content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"}
    )
    if response.status_code != 202:
        raise SystemExit(f"bench: the webhook was refused: {response.status_code} {response.text}")


def new_config(client: httpx.Client, headers: dict[str, str]) -> Callable[[], bool]:
    """Whether the agent's pull with `If-None-Match` gets anything but 304 Not Modified."""
    return lambda: client.get("/api/agent/targets", headers=headers).status_code != 304


def measure(repo: Path, server: Server, commits: int) -> list[float]:
    """Seconds from each commit's webhook until the agent's pull no longer answers 304."""
    token = server.mint_tokens(["eu-1"])["eu-1"]
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for index in range(commits):
            etag = client.get("/api/agent/targets", headers=headers).headers["etag"]
            write_canary(repo, f"https://example.com/{index}")
            commit_all(repo, f"commit {index}")
            started = time.perf_counter()
            send_webhook(client, index)
            wait_until(
                new_config(client, {**headers, "If-None-Match": etag}),
                GIVE_UP_SECONDS,
                f"the config of commit {index} to be served",
                interval=POLL_SECONDS,
            )
            samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--debounce", default="0.3", help="serve --debounce (default 0.3)")
    add_keep_option(parser)
    args = parser.parse_args()
    # SIGTERM (timeout, CI cancelling) unwinds like Ctrl-C, so the server is stopped and the
    # temporary directory removed instead of left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    try:
        samples = run(args)
    except KeyboardInterrupt:
        print(
            "bench: interrupted; the server was stopped and its directory removed", file=sys.stderr
        )
        return 130
    median, worst = statistics.median(samples), max(samples)
    print(
        f"webhook -> new config served: median {median * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms over {len(samples)} commits (--debounce {args.debounce})"
    )
    print(f"{'PASS' if worst <= TARGET_SECONDS else 'MISS'}: target {TARGET_SECONDS:.0f} s")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> list[float]:
    """Write the repository, start the server, measure; every sample in seconds."""
    with workspace(args.keep, "reconcile-webhook-") as base:
        repo = base / "repo"
        write_file(repo / "regions.yaml", region_doc("eu"))
        write_file(repo / "agents.yaml", agent_doc("eu-1", "eu"))
        write_canary(repo, "https://example.com/")
        init_repo(repo, "change")
        env = {"RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET}
        extra = ("--debounce", args.debounce)
        with Server(repo, base / "state.duckdb", env=env, extra=extra) as server:
            return measure(repo, server, args.commits)


if __name__ == "__main__":
    sys.exit(main())
