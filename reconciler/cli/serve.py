"""The `reconcile serve` and `reconcile agents` commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.process import configure_logging, loop_factory
from reconciler.cli.server_client import ServerUnreachable, admin_post, server_url
from reconciler.gateway.base import GatewayError
from reconciler.server.main import run_server
from reconciler.server.settings import SettingsError, load_settings
from reconciler.sources.gitrepo import GitSourceError
from reconciler.store.db import StateError, StateLocked, open_state
from reconciler.store.tokens import mint_token

SERVE_EPILOG = """\
settings: flags override environment variables, which override the TOML file given with
--config (keys as the flag names with '_', under [serve] or at the top level).
secrets (environment only): RECONCILER_ADMIN_TOKEN enables /operator/* (unset: 404),
RECONCILER_READ_TOKEN protects the read API, RECONCILER_WEBHOOK_SECRET enables /hooks/git.
"""


def add_server_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register `serve` and `agents` on the CLI's subcommands."""
    serve = commands.add_parser(
        "serve",
        help="run the control plane: follow the repo, serve agents, ingest results",
        description="Follow a config repository (a local working tree is watched; a git URL "
        "or bare repository is fetched every --poll-interval), apply each valid revision, "
        "serve agents their checks and store their results.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--repo", help="working tree path, bare repository or git URL")
    serve.add_argument("--state", type=Path, help="DuckDB state file")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    serve.add_argument("--branch", help="branch to follow in a git URL or bare repository")
    serve.add_argument("--poll-interval", type=float, metavar="SECONDS", help="default 60")
    serve.add_argument("--debounce", type=float, metavar="SECONDS", help="default 0.3")
    serve.add_argument("--local-region", help="the control plane's own region (default)")
    serve.add_argument("--clock-skew", type=float, metavar="SECONDS", help="default 300")
    serve.add_argument("--max-result-age", type=float, metavar="SECONDS", help="default 86400")
    serve.add_argument("--max-batch-bytes", type=int, help="default 4194304 (413 above)")
    serve.add_argument("--cache-dir", type=Path, help="where git mirrors are kept")
    serve.add_argument(
        "--notify-urls",
        metavar="URLS",
        help="comma-separated webhooks for incident and canary events; prefix slack+ for "
        "Slack-compatible messages (signed with RECONCILER_NOTIFY_SECRET)",
    )
    serve.add_argument(
        "--gateway",
        choices=["none", "nginx"],
        help="data plane for canary weights: nginx (managed by the server) or none "
        "(metrics pushed to /api/routes/ROUTE/metrics only); default none",
    )
    serve.add_argument("--gateway-listen", metavar="HOST:PORT", help="default 127.0.0.1:8088")
    serve.add_argument("--gateway-dir", type=Path, help="nginx prefix (default <state>.gateway)")
    serve.add_argument("--canary-interval", type=float, metavar="SECONDS", help="default 1")
    serve.add_argument(
        "--site-dir", type=Path, help="where the status site is built (default <state>.site)"
    )
    serve.add_argument(
        "--site-interval", type=float, metavar="SECONDS", help="rebuild period (default 60)"
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="default: text on a terminal, JSON lines otherwise",
    )

    agents = commands.add_parser("agents", help="manage agents (tokens)")
    agent_commands = agents.add_subparsers(
        dest="agents_command", metavar="ACTION", parser_class=parser_class
    )
    token = agent_commands.add_parser(
        "token",
        help="mint (or rotate) an agent's token; shown once",
        description="Mint a token for an agent in the state file. Minting again rotates it: "
        "the old token stops working. When `reconcile serve` holds the state file, the token "
        "is minted through its operator API (needs RECONCILER_ADMIN_TOKEN).",
    )
    token.add_argument("name", help="agent name")
    token.add_argument(
        "--state", type=Path, default=Path(os.environ.get("RECONCILER_STATE", "reconciler.duckdb"))
    )
    token.add_argument("--server", help="server URL (default: found next to the state file)")


def run_serve(args: argparse.Namespace, err: Any) -> int:
    """Run the server in the foreground."""
    flags = {
        key: getattr(args, key)
        for key in (
            "repo", "state", "host", "port", "branch", "poll_interval", "debounce",
            "local_region", "clock_skew", "max_result_age", "max_batch_bytes", "cache_dir",
            "notify_urls", "gateway", "gateway_listen", "gateway_dir", "canary_interval",
            "site_dir", "site_interval",
        )
    }  # fmt: skip
    try:
        settings = load_settings(flags, os.environ, args.config)
    except SettingsError as error:
        print(f"Error: {error}", file=err)
        return 1
    configure_logging(args.log_format or ("text" if sys.stderr.isatty() else "json"))
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_server(settings, os.environ, lambda: datetime.now(UTC)))
    except (StateError, GitSourceError, GatewayError, FileNotFoundError) as error:
        print(f"Error: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _known_agent(connection: Any, name: str) -> bool:
    found = connection.execute(
        "SELECT count(*) FROM resources WHERE address = ?", [f"agent.{name}"]
    ).fetchone()
    return bool(found and found[0])


def _mint_through_server(args: argparse.Namespace, out: Any, err: Any) -> int:
    url = server_url(args.state, args.server)
    admin = os.environ.get("RECONCILER_ADMIN_TOKEN")
    if url is None or not admin:
        print(
            f"Error: {args.state} is held by a running `reconcile serve`; to mint through its "
            "operator API set RECONCILER_ADMIN_TOKEN (the server's admin token)"
            + ("" if url else " and pass --server URL"),
            file=err,
        )
        return 1
    try:
        response = admin_post(url, f"/operator/agents/{args.name}/token", admin, timeout=10)
    except ServerUnreachable as error:
        print(f"Error: {error}", file=err)
        return 1
    if response.status_code != 201:
        print(f"Error: the server refused ({response.status_code}): {response.text}", file=err)
        return 1
    print(response.json()["token"], file=out)
    return 0


def run_agents(args: argparse.Namespace, out: Any, err: Any) -> int:
    """`reconcile agents token NAME`."""
    if args.agents_command != "token":
        print("Error: say what to do: `reconcile agents token NAME`", file=err)
        return 1
    if args.server:
        return _mint_through_server(args, out, err)
    if not args.state.exists():
        print(
            f"Error: no state file at {args.state}; apply the config first, pass --state, or "
            "pass --server URL to mint through a running server",
            file=err,
        )
        return 1
    try:
        connection = open_state(args.state, lock_timeout=0.5)
    except StateLocked:
        return _mint_through_server(args, out, err)
    except StateError as error:
        print(f"Error: {error}", file=err)
        return 1
    assert connection is not None
    with connection:
        if not _known_agent(connection, args.name):
            print(
                f"Error: agent {args.name} is not in {args.state}; add it to the config "
                "repository and apply first",
                file=err,
            )
            return 1
        token = mint_token(connection, args.name, datetime.now(UTC))
    print(token, file=out)
    print(
        f"Minted a token for {args.name}; it is shown only once. Any earlier token is revoked.",
        file=err,
    )
    return 0
