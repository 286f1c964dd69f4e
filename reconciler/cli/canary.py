"""`reconcile canary`: show and drive canary deployments through the running server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from reconciler.cli.server_client import ServerUnreachable, admin_post, server_url
from reconciler.store.db import StateError, open_state
from reconciler.store.deployments import evaluations, latest_runs

ACTIONS = ("status", "start", "pause", "resume", "promote", "rollback")


def add_canary_command(commands: Any) -> None:
    """Register `canary` on the CLI's subcommands."""
    canary = commands.add_parser(
        "canary",
        help="show or drive a route's canary deployment",
        description="status shows every canary run (or one route's) with its step, weights "
        "and latest evaluations; start|pause|resume|promote|rollback act on a run through the "
        "running `reconcile serve` (needs RECONCILER_ADMIN_TOKEN). Actions are audited and a "
        "later reconcile does not undo them.",
    )
    canary.add_argument("action", choices=ACTIONS)
    canary.add_argument("route", nargs="?", help="route name (required for actions)")
    canary.add_argument(
        "--state", type=Path, default=Path(os.environ.get("RECONCILER_STATE", "reconciler.duckdb"))
    )
    canary.add_argument("--server", help="server URL (default: found next to the state file)")
    canary.add_argument("--format", choices=["text", "json"], default="text")


def _offline_status(args: argparse.Namespace) -> list[dict[str, Any]]:
    connection = open_state(args.state, read_only=True, lock_timeout=1)
    if connection is None:
        raise StateError(f"no state file at {args.state}")
    with connection:
        views = []
        for route, run in sorted(latest_runs(connection).items()):
            runtime = run.runtime or {}
            views.append(
                {
                    "route": route,
                    "run": run.run_id,
                    "state": run.state,
                    "step": runtime.get("step", -1),
                    "weights": runtime.get("weights", {}),
                    "consecutive_failures": runtime.get("consecutive_failures", 0),
                    "reason": runtime.get("reason", run.reason),
                    "evaluations": evaluations(connection, run.run_id, 5),
                }
            )
    return views


def _print_views(views: list[dict[str, Any]], out: Any) -> None:
    if not views:
        print("no canary runs", file=out)
    for view in views:
        weights = ", ".join(f"{g} {w}%" for g, w in view.get("weights", {}).items())
        steps = len(view.get("steps", [])) or "?"
        print(
            f"{view['route']}: {view['state']} (run {view['run']}), step {view['step'] + 1}/"
            f"{steps}, weights {weights}, consecutive failures {view['consecutive_failures']}",
            file=out,
        )
        if view.get("reason"):
            print(f"  {view['reason']}", file=out)
        for evaluation in view.get("evaluations", [])[:5]:
            print(
                f"  {evaluation['at']} step {evaluation['step'] + 1} {evaluation['verdict']}: "
                f"{evaluation['reason']}",
                file=out,
            )


def run_canary(args: argparse.Namespace, out: Any, err: Any) -> int:
    """`reconcile canary ACTION [ROUTE]`."""
    url = server_url(args.state, args.server)
    if args.action == "status":
        try:
            if url is not None:
                read = os.environ.get("RECONCILER_READ_TOKEN")
                headers = {"Authorization": f"Bearer {read}"} if read else {}
                response = httpx.get(f"{url}/canary", headers=headers, timeout=10)
                response.raise_for_status()
                views = response.json()["canaries"]
            else:
                views = _offline_status(args)
        except (httpx.HTTPError, StateError) as error:
            print(f"Error: {error}", file=err)
            return 1
        if args.route:
            views = [v for v in views if v["route"] == args.route]
        if args.format == "json":
            print(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode(), file=out)
        else:
            _print_views(views, out)
        return 0
    if not args.route:
        print(f"Error: `reconcile canary {args.action}` needs a ROUTE", file=err)
        return 1
    admin = os.environ.get("RECONCILER_ADMIN_TOKEN")
    if url is None or not admin:
        print(
            "Error: canary actions change live traffic, so they go through the running "
            "`reconcile serve`: start it, and set RECONCILER_ADMIN_TOKEN"
            + ("" if url else " (and pass --server URL if its state file is elsewhere)"),
            file=err,
        )
        return 1
    try:
        response = admin_post(url, f"/canary/{args.route}/{args.action}", admin, timeout=30)
    except ServerUnreachable as error:
        print(f"Error: {error}", file=err)
        return 1
    if response.status_code != 200:
        detail = response.json().get("error", response.text) if response.content else ""
        print(f"Error: {args.action} refused ({response.status_code}): {detail}", file=err)
        return 1
    _print_views([response.json()], out)
    return 0
