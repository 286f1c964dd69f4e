"""Minting a token in the state file, or through the operator API of the server holding it.

`agents token` and `heartbeats token` share the route: a state file no server holds is
written directly; one `reconcile serve` holds (or `--server URL`) is asked over HTTP with the
admin token. Each command supplies what it does with a connection and with a client.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR
from reconciler.server.settings import SECRETS

if TYPE_CHECKING:  # imported when used: `reconcile --help` stays fast
    from reconciler.cli.server_client import ServerClient
    from reconciler.store.db import Connection

ADMIN_TOKEN_ENV = SECRETS["admin_token"]
# Another command holds the file for moments, a server for good: waiting longer than this
# only delays asking the server.
PROBE_LOCK_SECONDS = 0.5
SERVER_TIMEOUT = 10.0


def mint(
    args: argparse.Namespace,
    console: Console,
    in_state: Callable[[Connection], int],
    through_server: Callable[[ServerClient, str], int],
) -> int:
    """Run `in_state` on the state file, or `through_server` (a client and the server's URL)
    when `--server` is given or a server holds the file; returns the exit code."""
    from reconciler.store.db import StateError, StateLocked, open_state

    if args.server:
        return _through_server(args, console, through_server)
    if not args.state.exists():
        console.error(
            f"no state file at {args.state}; apply the config first, pass --state, or "
            "pass --server URL to mint through a running server"
        )
        return EXIT_ERROR
    try:
        connection = open_state(args.state, lock_timeout=PROBE_LOCK_SECONDS)
    except StateLocked:
        return _through_server(args, console, through_server)
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    assert connection is not None
    with connection:
        return in_state(connection)


def _through_server(
    args: argparse.Namespace,
    console: Console,
    through_server: Callable[[ServerClient, str], int],
) -> int:
    from reconciler.cli.server_client import ServerClient, ServerError, admin_token, server_url

    url, admin = server_url(args.state, args.server), admin_token()
    if url is None or admin is None:
        console.error(
            f"{args.state} is held by a running `reconcile serve`; to mint through its "
            f"operator API set {ADMIN_TOKEN_ENV} (the server's admin token)"
            + ("" if url else " and pass --server URL")
        )
        return EXIT_ERROR
    try:
        return through_server(ServerClient(url, admin), url)
    except ServerError as error:
        console.error(str(error))
        return EXIT_ERROR
