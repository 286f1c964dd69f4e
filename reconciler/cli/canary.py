"""`reconcile canary`: show and drive canary deployments through the running server."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.server.settings import SECRETS

ADMIN_TOKEN_ENV = SECRETS["admin_token"]

NAME = "canary"
ACTIONS = ("status", "start", "pause", "resume", "promote", "rollback")
# Reading the runs is quick; the status is only a glance, so a held file is not waited for long.
STATUS_LOCK_SECONDS = 1.0
STATUS_TIMEOUT, ACTION_TIMEOUT = 10.0, 30.0
EVALUATIONS_SHOWN = 5


def register(commands: Subcommands) -> None:
    """Add `canary` to the CLI."""
    canary = commands.add_parser(
        NAME,
        help="show or drive a route's canary deployment",
        description="status shows every canary run (or one route's) with its step, weights "
        "and latest evaluations; start|pause|resume|promote|rollback act on a run through the "
        f"running `reconcile serve` (needs {ADMIN_TOKEN_ENV}). Actions are audited and a "
        "later reconcile does not undo them.",
    )
    canary.add_argument("action", choices=ACTIONS, help="what to do")
    canary.add_argument("route", nargs="?", help="route name (required for actions)")
    options.add_state(canary, "state file, also how the server is found")
    options.add_server(canary)
    options.add_format(canary, ["text", "json"], help="output of status")


def _offline_status(args: argparse.Namespace) -> list[dict[str, Any]]:
    from reconciler.store.db import StateError, open_state
    from reconciler.store.deployments import run_documents

    connection = open_state(args.state, read_only=True, lock_timeout=STATUS_LOCK_SECONDS)
    if connection is None:
        raise StateError(f"no state file at {args.state}")
    with connection:
        return run_documents(connection, EVALUATIONS_SHOWN)


def _print_views(views: list[dict[str, Any]], console: Console) -> None:
    if not views:
        console.say("no canary runs")
    for view in views:
        weights = ", ".join(f"{g} {w}%" for g, w in view.get("weights", {}).items())
        steps = len(view.get("steps", [])) or "?"
        step = (
            f"step {view['step'] + 1}/{steps}"
            if view["step"] >= 0
            else f"not started ({steps} steps)"
        )
        console.say(
            f"{view['route']}: {view['state']} (run {view['run']}), {step}, weights {weights}, "
            f"consecutive failures {view['consecutive_failures']}"
        )
        if view.get("reason"):
            console.say(f"  {view['reason']}")
        for evaluation in view.get("evaluations", [])[:5]:
            console.say(
                f"  {evaluation['at']} step {evaluation['step'] + 1} {evaluation['verdict']}: "
                f"{evaluation['reason']}"
            )


def _status(args: argparse.Namespace, url: str | None, console: Console) -> int:
    from reconciler.cli.server_client import ServerClient, ServerError, read_token
    from reconciler.store.db import StateError

    try:
        if url is not None:
            answer = ServerClient(url, read_token()).get("/canary", timeout=STATUS_TIMEOUT)
            views = answer["canaries"]
        else:
            views = _offline_status(args)
    except (ServerError, StateError) as error:
        console.error(str(error))
        return EXIT_ERROR
    if args.route:
        known = sorted(v["route"] for v in views)
        views = [v for v in views if v["route"] == args.route]
        if not views:
            console.error(
                f"no canary run for route {args.route!r}; routes with one: "
                + (", ".join(known) or "none (no route has a canary block, or none applied)")
            )
            return EXIT_ERROR
    if args.format == "json":
        console.say(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_views(views, console)
    return EXIT_OK


def run(args: argparse.Namespace, console: Console) -> int:
    """`status` from the server or the file; actions through the server only."""
    from reconciler.cli.server_client import (
        ServerClient,
        ServerError,
        ServerRefused,
        admin_token,
        server_url,
    )

    url = server_url(args.state, args.server)
    if args.action == "status":
        return _status(args, url, console)
    if not args.route:
        console.error(f"`reconcile canary {args.action}` needs a ROUTE")
        return EXIT_ERROR
    admin = admin_token()
    if url is None or admin is None:
        console.error(
            "canary actions change live traffic, so they go through the running "
            f"`reconcile serve`: start it, and set {ADMIN_TOKEN_ENV}"
            + ("" if url else " (and pass --server URL if its state file is elsewhere)")
        )
        return EXIT_ERROR
    try:
        view = ServerClient(url, admin).post(
            f"/canary/{args.route}/{args.action}", timeout=ACTION_TIMEOUT
        )
    except ServerRefused as refused:
        console.error(f"{args.action} refused ({refused.status}): {refused.detail}")
        return EXIT_ERROR
    except ServerError as error:
        console.error(str(error))
        return EXIT_ERROR
    _print_views([view], console)
    return EXIT_OK
