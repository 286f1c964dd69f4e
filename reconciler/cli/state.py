"""`reconcile state backup`: a consistent copy of the state file, made while it is in use."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.server.settings import SECRETS

ADMIN_TOKEN_ENV = SECRETS["admin_token"]

NAME = "state"
# Copying a large state file through a busy server.
SERVER_TIMEOUT = 600.0

DESCRIPTION = f"""\
Copy every table of the state file, as of one moment, into a new DuckDB file at --out (never
over an existing one): a state file of its own, which any command opens with --state. While
`reconcile serve` holds the state file, the server makes the copy (set {ADMIN_TOKEN_ENV}; its
address is read from <state>.serve.json), and its ingest goes on meanwhile. The copy is
written under a hidden name beside --out and renamed into place once whole.
"""


def register(commands: Subcommands) -> None:
    """Add `state backup` to the CLI."""
    state = commands.add_parser(
        NAME,
        help="back up the state file",
        description="Work on the state file itself. `reconcile state backup --help` says more.",
    )
    actions = options.subcommands(state, "state_command", required=True)
    backup = actions.add_parser(
        "backup",
        help="copy the state file into a new file, while it is in use",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_state(backup)
    backup.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the new file (must not exist)"
    )
    options.add_lock_timeout(backup)
    options.add_quiet(backup, help="print nothing on success")


def run(args: argparse.Namespace, console: Console) -> int:
    """Back up the state file, or have the server that holds it do so."""
    from reconciler.cli.server_client import post_as_admin, server_url
    from reconciler.store.backup import backup_state
    from reconciler.store.db import StateError, StateLocked, open_state

    if not args.state.exists():
        console.error(f"no state file at {args.state}; run `reconcile apply` first")
        return EXIT_ERROR
    through = None
    try:
        connection = open_state(args.state, read_only=True, lock_timeout=args.lock_timeout)
    except StateLocked as error:
        url = server_url(args.state)
        if url is None:
            console.error(str(error))
            return EXIT_ERROR
        made = post_as_admin(
            url,
            "/api/state/backup",
            {"out": str(args.out.absolute())},
            timeout=SERVER_TIMEOUT,
            console=console,
            state=args.state,
            to="back it up through the server",
        )
        if made is None:
            return EXIT_ERROR
        through = f" through the server at {url}"
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    else:
        assert connection is not None  # it exists
        try:
            with connection:
                made = backup_state(connection, args.out).document()
        except StateError as error:
            console.error(str(error))
            return EXIT_ERROR
    if not console.quiet:
        console.say(
            f"Backed up {args.state}{through or ''} to {made['out']}: serial {made['serial']}, "
            f"lineage {made['lineage']}, {made['bytes'] / 2**20:.1f} MiB in {made['seconds']:.2f}s."
        )
    return EXIT_OK
