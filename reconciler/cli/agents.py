"""`reconcile agents token NAME`: mint (or rotate) an agent's token, in the file or via serve."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.server.settings import SECRETS

ADMIN_TOKEN_ENV = SECRETS["admin_token"]

NAME = "agents"

# Another command holds the file for moments, a server for good: waiting longer than this
# only delays asking the server.
PROBE_LOCK_SECONDS = 0.5
SERVER_TIMEOUT = 10.0


def register(commands: Subcommands) -> None:
    """Add `agents token` to the CLI."""
    agents = commands.add_parser(
        NAME,
        help="manage agents (tokens)",
        description="Manage agents. Agents themselves are YAML in the config repository; "
        "their tokens are not, and are minted here.",
    )
    actions = options.subcommands(agents, "agents_command")
    token = actions.add_parser(
        "token",
        help="mint (or rotate) an agent's token; shown once",
        description="Mint a token for an agent in the state file. Minting again rotates it: "
        "the old token stops working. When `reconcile serve` holds the state file, the token "
        f"is minted through its operator API (needs {ADMIN_TOKEN_ENV}).",
    )
    token.add_argument("name", help="agent name, as in the config repository")
    options.add_state(token, "the control plane's state file")
    options.add_server(token)


def run(args: argparse.Namespace, console: Console) -> int:
    """Print a new token on stdout; 1 when the agent is unknown or the server refuses."""
    from reconciler.store.db import StateError, StateLocked, open_state
    from reconciler.store.tokens import agent_is_configured, mint_token

    if args.agents_command != "token":
        console.error("say what to do: `reconcile agents token NAME`")
        return EXIT_ERROR
    if args.server:
        return _mint_through_server(args, console)
    if not args.state.exists():
        console.error(
            f"no state file at {args.state}; apply the config first, pass --state, or "
            "pass --server URL to mint through a running server"
        )
        return EXIT_ERROR
    try:
        connection = open_state(args.state, lock_timeout=PROBE_LOCK_SECONDS)
    except StateLocked:
        return _mint_through_server(args, console)
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    assert connection is not None
    with connection:
        if not agent_is_configured(connection, args.name):
            console.error(
                f"agent {args.name} is not in {args.state}; add it to the config "
                "repository and apply first"
            )
            return EXIT_ERROR
        token = mint_token(connection, args.name, datetime.now(UTC))
    console.say(token)
    console.note(
        f"Minted a token for {args.name}; it is shown only once. Any earlier token is revoked."
    )
    return EXIT_OK


def _mint_through_server(args: argparse.Namespace, console: Console) -> int:
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
        answer = ServerClient(url, admin).post(
            f"/operator/agents/{args.name}/token", timeout=SERVER_TIMEOUT, expect=201
        )
    except ServerError as error:
        console.error(str(error))
        return EXIT_ERROR
    console.say(str(answer["token"]))
    return EXIT_OK
