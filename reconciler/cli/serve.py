"""`reconcile serve`: run the control plane in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.server.settings import ENVIRONMENT, ServeSettings, SettingsError, load_settings

NAME = "serve"

EPILOG = """\
settings: flags override environment variables, which override the TOML file given with
--config (keys as the flag names with '_', under [serve] or at the top level). A setting's
variable is RECONCILER_ and its flag's name in capitals with '_' (--max-connections:
RECONCILER_MAX_CONNECTIONS); --config and --log-format have none.
secrets (environment only): RECONCILER_ADMIN_TOKEN enables /operator/* (unset: 404),
RECONCILER_READ_TOKEN protects the read API, RECONCILER_WEBHOOK_SECRET enables /hooks/git.
"""

# `--help` reads the defaults it prints from the settings, so the two cannot drift apart.
DEFAULTS = ServeSettings()


def default(name: str) -> str:
    """The default of setting `name` as `--help` prints it: `60`, not `60.0`."""
    value = getattr(DEFAULTS, name)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def number(
    parser: argparse.ArgumentParser, flag: str, kind: type, metavar: str, after: str = ""
) -> None:
    """A setting given as one number, its help the default (`after`: what follows it)."""
    parser.add_argument(
        flag,
        type=kind,
        metavar=metavar,
        help=f"default {default(flag[2:].replace('-', '_'))}{after}",
    )


def register(commands: Subcommands) -> None:
    """Add `serve` to the CLI; every setting's default is left to the environment and file."""
    serve = commands.add_parser(
        NAME,
        help="run the control plane: follow the repo, serve agents, ingest results",
        description="Follow a config repository (a local working tree is watched; a git URL "
        "or bare repository is fetched every --poll-interval), apply each valid revision, "
        "serve agents their checks and store their results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--repo",
        help=f"working tree path, bare repository or git URL (default: {default('repo')})",
    )
    options.add_state(serve, "DuckDB state file, held until the server exits", settings=True)
    options.add_lock_timeout(serve, settings=True)
    serve.add_argument("--host", help=f"address to listen on (default {default('host')})")
    serve.add_argument(
        "--port", type=options.port, help=f"port to listen on (default {default('port')}; 0 = any)"
    )
    serve.add_argument(
        "--branch",
        help="branch to follow in a git URL or bare repository (default: the remote's default "
        "branch)",
    )
    number(serve, "--poll-interval", float, "SECONDS")
    number(serve, "--debounce", float, "SECONDS")
    serve.add_argument(
        "--local-region",
        type=options.region_name,
        metavar="NAME",
        help="the control plane's own region, where 'local' checks run "
        f"(default: {default('local_region')})",
    )
    number(serve, "--clock-skew", float, "SECONDS")
    number(serve, "--max-result-age", float, "SECONDS")
    number(serve, "--max-batch-bytes", int, "BYTES", " (413 above)")
    # The listener's read limits (docs/limits.md).
    number(serve, "--max-batch-rows", int, "ROWS", " (413 above)")
    number(serve, "--header-timeout", float, "SECONDS")
    number(serve, "--body-timeout", float, "SECONDS")
    number(serve, "--keep-alive-timeout", int, "SECONDS")
    number(serve, "--max-header-bytes", int, "BYTES", " (431 above)")
    number(serve, "--max-connections", int, "COUNT", " (503 above)")
    number(serve, "--webhook-replay-window", float, "SECONDS", " (409 within)")
    serve.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where git mirrors are kept (default <state>.cache)",
    )
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
        "(metrics pushed to /api/routes/ROUTE/metrics only); "
        f"default {default('gateway')}",
    )
    serve.add_argument(
        "--gateway-listen", metavar="HOST:PORT", help=f"default {default('gateway_listen')}"
    )
    serve.add_argument(
        "--gateway-dir", type=Path, metavar="DIR", help="nginx prefix (default <state>.gateway)"
    )
    number(serve, "--canary-interval", float, "SECONDS")
    serve.add_argument(
        "--site-dir",
        type=Path,
        metavar="DIR",
        help="where the status site is built (default <state>.site)",
    )
    serve.add_argument(
        "--site-interval",
        type=float,
        metavar="SECONDS",
        help=f"rebuild period (default {default('site_interval')})",
    )
    serve.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="where days of results older than --archive-after go, as Parquet "
        "(default: <state>.history; docs/history.md)",
    )
    serve.add_argument(
        "--archive-after",
        type=lambda text: options.days(text).days,
        metavar="DAYS",
        help="move days of results older than this out of the state file, hourly "
        f"(default {default('archive_after')}d)",
    )
    serve.add_argument(
        "--delete-after",
        type=lambda text: options.days(text).days,
        metavar="DAYS",
        help="delete archived days older than this (default: keep them forever)",
    )
    serve.add_argument(
        "--probe-metrics",
        choices=["off", "basic", "full"],
        help="per-check series on /metrics, named as blackbox_exporter names them: basic "
        "(probe_success, probe_duration_seconds, last run), full (also HTTP status and phases), "
        f"off (default {default('probe_metrics')}; docs/metrics.md has the cardinality)",
    )
    serve.add_argument(
        "--probe-metrics-window",
        type=float,
        metavar="SECONDS",
        help="checks whose latest run is older than this have no series "
        f"(default {default('probe_metrics_window')})",
    )
    serve.add_argument(
        "--agent-silent-after",
        type=float,
        metavar="SECONDS",
        help="announce agent_silent for an enabled agent not heard from (no pull, no push) "
        "for this long, agent_recovered when it is back "
        f"(default {default('agent_silent_after')}; 0: off)",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="default: text on a terminal, JSON lines otherwise",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Serve until SIGTERM or Ctrl-C; 1 when the server cannot start."""
    # The server (FastAPI, uvicorn, DuckDB, git) is imported only by the command that runs it.
    import asyncio

    from agent.process import configure_logging, loop_factory
    from reconciler.gateway.base import GatewayError
    from reconciler.server.main import ListenError, run_server
    from reconciler.sources.gitrepo import GitSourceError
    from reconciler.store.db import StateError

    # Every setting is a flag of the same name; the settings module says which ones exist.
    flags = {key: getattr(args, key, None) for key in ENVIRONMENT}
    try:
        settings = load_settings(flags, os.environ, args.config)
    except SettingsError as error:
        console.error(str(error))
        return EXIT_ERROR
    configure_logging(args.log_format or ("text" if sys.stderr.isatty() else "json"))
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_server(settings, os.environ, lambda: datetime.now(UTC)))
    except (StateError, GitSourceError, GatewayError, FileNotFoundError, ListenError) as error:
        console.error(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        pass
    return EXIT_OK
