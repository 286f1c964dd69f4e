"""`reconcile revisions`: the revisions applied to a state file, newest first."""

from __future__ import annotations

import argparse

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands

NAME = "revisions"


def register(commands: Subcommands) -> None:
    """Add `revisions` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="list the revisions applied to a state",
        description="List the revisions applied to a state file, newest first: serial, "
        "commit, apply time (UTC), resources added/changed/destroyed and the commit subject. "
        "The file is opened read-only.",
    )
    options.add_state(parser)
    options.add_lock_timeout(parser)
    options.add_quiet(parser)  # accepted as by every command: it prints no progress anyway
    parser.add_argument(
        "--limit",
        type=options.count,
        default=20,
        metavar="N",
        help="show at most N revisions (default: 20)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """List the revisions; 1 when the state file is missing or unusable."""
    from reconciler.cli.state_file import existing_state
    from reconciler.store.resources import list_revisions

    connection = existing_state(args.state, console, read_only=True, lock_timeout=args.lock_timeout)
    if connection is None:
        return EXIT_ERROR
    with connection:
        for row in list_revisions(connection, args.limit):
            sha = (row.sha or "-")[:12]
            console.say(
                f"{row.serial:>6}  {sha:<12}  {row.applied_at:%Y-%m-%d %H:%M:%S}  "
                f"+{row.added} ~{row.changed} -{row.destroyed}  {row.message or ''}"
            )
    return EXIT_OK
