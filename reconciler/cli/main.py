"""The `reconcile` command line: assembles the command modules' parsers and dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from reconciler import __version__
from reconciler.cli import (
    agents,
    apply,
    canary,
    demo,
    heartbeats,
    plan,
    results,
    revisions,
    schema,
    serve,
    site,
    state,
    validate,
)
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, Command, Parser

# In the order `reconcile --help` lists them: the config workflow first, then the server.
COMMANDS: tuple[Command, ...] = (
    validate, plan, apply, schema, serve, agents, heartbeats, canary, site, results, demo,
    revisions, state,
)  # fmt: skip

DESCRIPTION = """\
Synthetic monitoring and progressive delivery, managed as code.

Load a config repository of YAML (Regions, Agents, Canaries, Routes), compile the
desired state, diff it against a DuckDB state file, print the plan and apply it.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = Parser(
        prog="reconcile",
        description=DESCRIPTION,
        epilog=plan.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(commands)
    return parser


def _normalise(argv: Sequence[str]) -> list[str]:
    """`reconcile --plan ...` is `reconcile plan ...`."""
    args = list(argv)
    if "--plan" in args:
        args.remove("--plan")
        args.insert(0, "plan")
    return args


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(_normalise(sys.argv[1:] if argv is None else argv))
    console = Console(out or sys.stdout, err or sys.stderr, getattr(args, "quiet", False))
    if args.command is None:
        parser.print_help(console.out)
        return EXIT_ERROR
    handlers = {command.NAME: command for command in COMMANDS}
    try:
        return handlers[args.command].run(args, console)
    except Exception as error:
        # DuckDB reads a file as queries need it: a damaged or cut-short state file can fail
        # any query, not only the opening. Its transaction was rolled back on the way out.
        duckdb = sys.modules.get("duckdb")
        if duckdb is None or not isinstance(error, duckdb.Error):
            raise
        console.error(f"the state file could not be used, nothing was changed: {error}")
        return EXIT_ERROR


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
