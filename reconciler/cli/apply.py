"""`reconcile apply`: apply the config, or a saved plan, to the state file in one transaction."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands

if TYPE_CHECKING:
    from reconciler.core.plan import Plan
    from reconciler.session import Session
    from reconciler.store.resources import ApplyResult

NAME = "apply"


def register(commands: Subcommands) -> None:
    """Add `apply` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="apply the config (or a saved plan) to the state file",
        description="Plan and apply in one DuckDB transaction, or apply exactly a plan "
        "saved with `plan --out` (refused when the state changed since).",
    )
    parser.add_argument(
        "plan_file",
        nargs="?",
        type=Path,
        metavar="PLAN",
        help="a plan saved with `reconcile plan --out`; the config is then not read again",
    )
    options.add_source(parser)
    options.add_quiet(parser)
    options.add_state(parser, "DuckDB state file to apply to, created when missing")
    options.add_lock_timeout(parser)
    parser.add_argument(
        "--auto-approve", action="store_true", help="apply without asking for confirmation"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _applied(result: ApplyResult, console: Console) -> None:
    summary = result.summary
    if not result.wrote:
        return
    if summary.empty and not result.canary_runs:
        console.say(
            f"Recorded the revision; no resource changed. State serial {result.state.serial}."
        )
        return
    runs = f", {len(result.canary_runs)} canary run(s) started" if result.canary_runs else ""
    console.say(
        f"Apply complete! Resources: {summary.add} added, {summary.change} changed, "
        f"{summary.destroy} destroyed{runs}. State serial {result.state.serial}."
    )


def _confirm(console: Console) -> bool:
    if not sys.stdin.isatty():
        console.error(
            "refusing to apply without confirmation: stdin is not a terminal; "
            "pass --auto-approve to apply from scripts"
        )
        return False
    try:
        answer = input("\nDo you want to apply these changes? Only 'yes' will be accepted: ")
    except EOFError:  # Ctrl-D: no answer is not a yes
        console.error("no answer (end of input): nothing was applied")
        return False
    return answer.strip() == "yes"


def run(args: argparse.Namespace, console: Console) -> int:
    """Apply; 0 when applied or nothing to apply, 1 when invalid, cancelled or refused."""
    from reconciler.cli.loading import load, report_invalid
    from reconciler.render.text import render_text
    from reconciler.session import Session, Settings
    from reconciler.store.db import StateError

    session = Session(Settings(args.local_region, args.lock_timeout))
    try:
        if args.plan_file is not None:
            return _apply_saved(args, session, console)
        loaded = load(args, session, console)
        if loaded is None:
            return EXIT_ERROR
        if not loaded.ok:
            report_invalid(loaded, "text", console, str(args.repo))
            return EXIT_ERROR

        def approve(plan: Plan) -> bool:
            console.out.write(render_text(plan))
            console.out.flush()
            return bool(args.auto_approve) or _confirm(console)

        new = not args.state.exists()
        plan, result = session.apply(loaded, args.state, _now, approve)
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    if result is None:
        console.error("apply cancelled; the state is unchanged")
        return EXIT_ERROR
    if not plan.changes:
        console.out.write(render_text(plan))
    _applied(result, console)
    if new and result.wrote:
        # A mistyped --state starts a new lineage: say so, where the file is.
        console.progress(f"started a new state file {args.state.resolve()}")
    return EXIT_OK


def _apply_saved(args: argparse.Namespace, session: Session, console: Console) -> int:
    from reconciler.core.planfile import PlanFileError, plan_from_dict
    from reconciler.render.text import render_text

    try:
        plan = plan_from_dict(orjson.loads(args.plan_file.read_bytes()))
    except OSError as error:
        console.error(f"cannot read the plan {args.plan_file}: {error.strerror or error}")
        return EXIT_ERROR
    except orjson.JSONDecodeError as error:
        console.error(
            f"cannot read the plan {args.plan_file}: it is not JSON, so not a plan saved by "
            f"`reconcile plan --out` ({error})"
        )
        return EXIT_ERROR
    except PlanFileError as error:
        console.error(f"cannot read the plan {args.plan_file}: {error}")
        return EXIT_ERROR
    result = session.apply_saved(plan, args.state, _now)
    console.out.write(render_text(plan))
    _applied(result, console)
    return EXIT_OK
