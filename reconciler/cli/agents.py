"""`reconcile agents token NAME`: mint (or rotate) an agent's token, in the file or via serve."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.minting import ADMIN_TOKEN_ENV, SERVER_TIMEOUT, mint
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands

if TYPE_CHECKING:
    from reconciler.cli.server_client import ServerClient
    from reconciler.store.db import Connection

NAME = "agents"


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
    if args.agents_command != "token":
        console.error("say what to do: `reconcile agents token NAME`")
        return EXIT_ERROR

    def in_state(connection: Connection) -> int:
        from reconciler.store.tokens import agent_is_configured, mint_token

        if not agent_is_configured(connection, args.name):
            console.error(
                f"agent {args.name} is not in {args.state}; add it to the config "
                "repository and apply first"
            )
            return EXIT_ERROR
        console.say(mint_token(connection, args.name, datetime.now(UTC)))
        console.note(
            f"Minted a token for {args.name}; it is shown only once. Any earlier token is revoked."
        )
        return EXIT_OK

    def through_server(client: ServerClient, url: str) -> int:
        answer = client.post(
            f"/operator/agents/{args.name}/token", timeout=SERVER_TIMEOUT, expect=201
        )
        console.say(str(answer["token"]))
        return EXIT_OK

    return mint(args, console, in_state, through_server)
