"""`reconcile heartbeats token CANARY CHECK`: mint (or rotate) a heartbeat check's token."""

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

NAME = "heartbeats"
PING_PATH = "/api/v1/heartbeat/"


def register(commands: Subcommands) -> None:
    """Add `heartbeats token` to the CLI."""
    heartbeats = commands.add_parser(
        NAME,
        help="manage heartbeat checks (tokens)",
        description="Manage heartbeat checks. They are YAML in the config repository; "
        "the tokens their jobs ping with are not, and are minted here.",
    )
    actions = options.subcommands(heartbeats, "heartbeats_command")
    token = actions.add_parser(
        "token",
        help="mint (or rotate) a heartbeat's ping token; shown once",
        description="Mint the token a job pings a heartbeat check with "
        "(`/api/v1/heartbeat/TOKEN`). Minting again rotates it: the old token stops "
        "working. When `reconcile serve` holds the state file, the token is minted "
        f"through its operator API (needs {ADMIN_TOKEN_ENV}).",
    )
    token.add_argument("canary", help="the canary, NAMESPACE/NAME (or NAME: namespace default)")
    token.add_argument("check", help="the heartbeat check's name")
    options.add_state(token, "the control plane's state file")
    options.add_server(token)


def _canary_key(text: str) -> str:
    return text if "/" in text else f"default/{text}"


def run(args: argparse.Namespace, console: Console) -> int:
    """Print a new token on stdout; 1 when the heartbeat is unknown or the server refuses."""
    if args.heartbeats_command != "token":
        console.error("say what to do: `reconcile heartbeats token CANARY CHECK`")
        return EXIT_ERROR
    canary = _canary_key(args.canary)

    def in_state(connection: Connection) -> int:
        from reconciler.store.heartbeats import heartbeat_is_configured, mint_heartbeat_token

        if not heartbeat_is_configured(connection, canary, args.check):
            console.error(
                f"canary {canary} has no heartbeat check {args.check!r} in {args.state}; "
                "add it to the config repository and apply first"
            )
            return EXIT_ERROR
        console.say(mint_heartbeat_token(connection, (canary, args.check), datetime.now(UTC)))
        console.note(
            f"Minted a token for heartbeat {args.check!r} of {canary}; it is shown only once "
            f"and any earlier one is revoked. The job pings <server URL>{PING_PATH}<token>."
        )
        return EXIT_OK

    def through_server(client: ServerClient, url: str) -> int:
        answer = client.post(
            "/operator/heartbeats/token",
            timeout=SERVER_TIMEOUT,
            expect=201,
            body={"canary": canary, "check": args.check},
        )
        console.say(str(answer["token"]))
        console.note(f"The job pings {url}{answer['ping_path']}")
        return EXIT_OK

    return mint(args, console, in_state, through_server)
