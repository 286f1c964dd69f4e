"""`reconcile demo`: the whole product on one machine, on loopback only."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import Subcommands

if TYPE_CHECKING:
    from reconciler.demo.run import Demo

NAME = "demo"

DEMO_EPILOG = """\
The demo copies the sample config to a new git repository in the demo directory, points its
checks and routes at small local backends (and prints every field it rewrote), runs
`reconcile serve` on it, one agent per enabled agent of an enabled region, and, when nginx is
installed, the canary controller stepping a route on a real nginx with a trickle of traffic.
It prints the URLs to open and what to try. Ctrl-C (or SIGTERM) stops everything; the demo
directory is kept so the site and the state can be browsed.

examples:
  reconcile demo                       # until Ctrl-C, API on 127.0.0.1:8080
  reconcile demo --duration 30 --port 0   # headless, for CI
"""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _default_repo() -> Path:
    """The sample-repo/ of a source checkout, else ./sample-repo."""
    bundled = Path(__file__).resolve().parents[2] / "sample-repo"
    return bundled if bundled.is_dir() else Path("sample-repo")


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def register(commands: Subcommands) -> None:
    """Add `demo` to the CLI."""
    demo = commands.add_parser(
        NAME,
        help="run everything on this machine: backends, server, agents, gateway, site",
        description="Start a complete demo on 127.0.0.1: local demo backends, `reconcile "
        "serve` on a copy of sample-repo/, agents for the sample regions, the canary "
        "controller on nginx (when installed) and the status site.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--repo",
        type=Path,
        default=_default_repo(),
        help="the config to demo (default: the project's sample-repo/)",
    )
    demo.add_argument(
        "--dir",
        type=Path,
        help="demo directory, kept after exit (default: a new temporary directory)",
    )
    demo.add_argument(
        "--port",
        type=options.port,
        default=8080,
        help="the server's port (default 8080; 0 = any free)",
    )
    demo.add_argument(
        "--gateway",
        choices=["auto", "nginx", "none"],
        default="auto",
        help="nginx for canary steps (auto: when installed; default auto)",
    )
    demo.add_argument(
        "--gateway-port",
        type=options.port,
        help="nginx's port (default 8088, or any free one with --port 0)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help="stop by itself this long after starting (for CI); default: until Ctrl-C",
    )


def _install_handlers(demo: Demo) -> Callable[[], None]:
    """Route stop signals to the demo; the function that restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, frame: FrameType | None) -> None:
        demo.request_stop(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the demo until Ctrl-C, SIGTERM or --duration; 0 on a clean stop."""
    from reconciler.demo.output import Console as DemoConsole
    from reconciler.demo.run import Demo, DemoOptions

    options = DemoOptions(
        repo=args.repo,
        directory=args.dir,
        port=args.port,
        gateway=args.gateway,
        gateway_port=args.gateway_port,
        duration=args.duration,
    )
    demo = Demo(options, DemoConsole(console.out, console.err))
    restore = _install_handlers(demo)
    try:
        return demo.run()
    finally:
        restore()
