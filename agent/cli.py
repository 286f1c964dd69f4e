"""The `agent` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the agent."""
    parser = argparse.ArgumentParser(
        prog="agent",
        description="A stateless probe: pulls its checks from the control plane, runs them "
        "and ships the results.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the agent (not built yet)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 1
    print("agent: `agent run` is not built yet in this version", file=sys.stderr)
    return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
