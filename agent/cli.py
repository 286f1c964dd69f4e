"""The `agent` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.process import configure_logging, freeze_survivors, loop_factory
from agent.settings import SettingsError, load_settings

EPILOG = """\
environment: RECONCILER_URL (the control plane), AGENT_TOKEN (required; never put it in a file
in git — mint it with `reconcile agents token NAME`), and AGENT_PULL_INTERVAL,
AGENT_FLUSH_INTERVAL, AGENT_BUFFER_CAPACITY, AGENT_BATCH_SIZE, AGENT_SPOOL, AGENT_LISTEN,
AGENT_RECONNECT_AFTER, AGENT_SHUTDOWN_TIMEOUT, AGENT_HTTP_CLIENTS, AGENT_MAX_RESPONSE_HEADERS,
AGENT_MAX_RESPONSE_HEADER_BYTES, AGENT_MAX_RESPONSE_HEADER_LINE, AGENT_MAX_RESPONSE_BODY_BYTES
for the flags below.

signals: SIGTERM or Ctrl-C stop scheduling, ship buffered results (bounded by
--shutdown-timeout) and exit 0; SIGUSR1 disconnects from the control plane while checks keep
running, and reconnects after --reconnect-after seconds (like POST /disconnect).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the agent."""
    parser = argparse.ArgumentParser(
        prog="agent",
        description="A stateless probe: pulls its checks from the control plane, runs them "
        "and ships the results.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the agent until SIGTERM",
        description="Pull this agent's checks (with ETags), run them on their schedules, "
        "spool results to a local file and ship them in batches.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--url", help="control plane URL (default: $RECONCILER_URL)")
    run.add_argument(
        "--pull-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between config pulls when the server does not hold them (default 30)",
    )
    run.add_argument(
        "--pull-wait",
        type=float,
        metavar="SECONDS",
        help="how long the server may hold a pull until the config changes, so a commit "
        "reaches the agent at once (a long poll; default 30, at most 60; 0: plain polling)",
    )
    run.add_argument("--flush-interval", type=float, metavar="SECONDS", help="default 5")
    run.add_argument("--buffer-capacity", type=int, metavar="ROWS", help="default 10000")
    run.add_argument("--batch-size", type=int, metavar="ROWS", help="rows per POST, default 500")
    run.add_argument("--spool", type=Path, help="spool file (default agent-spool.sqlite)")
    run.add_argument(
        "--listen", metavar="HOST:PORT", help="status endpoint (default 127.0.0.1:9470; off)"
    )
    run.add_argument("--reconnect-after", type=float, metavar="SECONDS", help="default 60")
    run.add_argument("--shutdown-timeout", type=float, metavar="SECONDS", help="default 10")
    run.add_argument("--http-clients", type=int, help="HTTP clients checks share (default 16)")
    run.add_argument(
        "--max-response-headers", type=int, metavar="N", help="header fields, default 100"
    )
    run.add_argument("--max-response-header-bytes", type=int, metavar="BYTES", help="default 65536")
    run.add_argument("--max-response-header-line", type=int, metavar="BYTES", help="default 16384")
    run.add_argument("--max-response-body-bytes", type=int, metavar="BYTES", help="default 4194304")
    run.add_argument(
        "--allow-browser-checks",
        action="store_true",
        help="run browser checks: their scripts come from the config repository and run "
        "here (default: off; they report an error)",
    )
    run.add_argument(
        "--browser-path",
        type=Path,
        metavar="FILE",
        help="Chromium binary of browser checks (default: chromium on PATH, else "
        "/usr/bin/chromium; $AGENT_BROWSER_PATH)",
    )
    run.add_argument(
        "--browser-priority",
        choices=["idle", "normal"],
        help="how Chromium and the Playwright driver are scheduled: idle (default) gives them "
        "only the CPU other work leaves, so page loads never delay other checks; normal "
        "runs them like the agent ($AGENT_BROWSER_PRIORITY)",
    )
    run.add_argument(
        "--browser-cpus",
        metavar="LIST",
        help="the CPUs Chromium and the Playwright driver may run on, as taskset writes them "
        "(1-3, 0,2); e.g. all but the first, to keep a CPU for the other checks "
        "($AGENT_BROWSER_CPUS; default: any)",
    )
    run.add_argument("--log-format", choices=["text", "json"], default=None)
    return parser


async def _run(args: argparse.Namespace) -> int:
    from agent.runtime import Agent  # imported here: `agent --help` stays fast

    flags = {
        name: getattr(args, name)
        for name in (
            "url", "pull_interval", "pull_wait", "flush_interval", "buffer_capacity", "batch_size",
            "spool", "listen", "reconnect_after", "shutdown_timeout", "http_clients",
            "max_response_headers", "max_response_header_bytes", "max_response_header_line",
            "max_response_body_bytes", "allow_browser_checks", "browser_path", "browser_priority",
            "browser_cpus",
        )
    }  # fmt: skip
    settings = load_settings(flags, os.environ)
    agent = Agent(settings, on_long_lived=freeze_survivors)
    freeze_survivors()  # the modules: imported by now
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, agent.stop)
    loop.add_signal_handler(signal.SIGINT, agent.stop)
    loop.add_signal_handler(signal.SIGUSR1, agent.disconnect)
    loop.add_signal_handler(signal.SIGHUP, agent.pull_now)
    logging.getLogger("agent").info("agent starting against %s", settings.url)
    await agent.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 1
    configure_logging(
        args.log_format or ("text" if sys.stderr.isatty() else "json"), quiet=["httpx"]
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(_run(args))
    except SettingsError as error:
        print(f"agent: error: {error}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
