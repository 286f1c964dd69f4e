"""`reconcile plan` (alias `reconcile --plan`): what applying the config would change."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Subcommands

if TYPE_CHECKING:
    from reconciler.core.plan import Plan

NAME = "plan"

# Shown by `reconcile --help` too: planning is what most people come for.
EPILOG = """\
examples:
  reconcile validate --repo sample-repo
  reconcile --plan --repo sample-repo --state reconciler.duckdb
  reconcile plan --repo . --ref HEAD --base origin/main --format markdown
  reconcile plan --repo sample-repo --out plan.json && reconcile apply plan.json
  reconcile apply --repo sample-repo --auto-approve

exit codes: 0 success (with --detailed-exitcode: no changes), 1 error or invalid
config, 2 changes present (only with --detailed-exitcode).
environment: RECONCILER_STATE (default state file), RECONCILER_LOCAL_REGION,
RECONCILER_LOCK_TIMEOUT (default --lock-timeout).
"""


def register(commands: Subcommands) -> None:
    """Add `plan` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="show what applying the config would change (alias: --plan)",
        description="Compile the desired state and diff it against a state file "
        "(--state) or the desired state of another git ref (--base).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_source(parser)
    options.add_quiet(parser)
    options.add_state(parser, "DuckDB state file to plan against, opened read-only")
    options.add_lock_timeout(parser)
    parser.add_argument(
        "--base", metavar="REF", help="diff against this git ref's config, not the state file"
    )
    options.add_format(parser, ["text", "json", "markdown", "github"], help="how to print the plan")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="save the plan as JSON for `reconcile apply FILE`"
    )


def render(plan: Plan, fmt: str, root: str) -> str:
    """The plan in one of the output formats."""
    from reconciler.core.planfile import plan_to_dict
    from reconciler.render.github import render_annotations
    from reconciler.render.markdown import render_markdown
    from reconciler.render.text import render_text

    if fmt == "json":
        return orjson.dumps(plan_to_dict(plan), option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "markdown":
        return render_markdown(plan)
    if fmt == "github":
        summary = plan.summary
        notice = (
            f"::notice title=canary-reconciler plan::Plan: {summary.add} to add, "
            f"{summary.change} to change, {summary.destroy} to destroy.\n"
        )
        return render_annotations(plan.diagnostics, root) + notice + render_text(plan)
    return render_text(plan)


def run(args: argparse.Namespace, console: Console) -> int:
    """Print the plan (and save it with --out); 2 for changes with --detailed-exitcode."""
    from reconciler.cli.loading import load, report_invalid
    from reconciler.core.planfile import plan_to_dict
    from reconciler.session import Session, Settings, SourceError

    if args.out and args.base:
        console.error("--out saves plans made against a state file; it cannot be used with --base")
        return EXIT_ERROR
    session = Session(Settings(args.local_region, args.lock_timeout))
    loaded = load(args, session, console)
    if loaded is None:
        return EXIT_ERROR
    if not loaded.ok:
        report_invalid(loaded, args.format, console, str(args.repo))
        return EXIT_ERROR
    if args.base:  # PR CI's plan: no state file, so no DuckDB to import
        try:
            plan = session.plan_against_base(loaded, args.repo, args.base)
        except SourceError as error:
            console.error(str(error))
            return EXIT_ERROR
    else:
        from reconciler.store.db import StateError

        try:
            plan = session.plan_against_state(loaded, args.state)
        except StateError as error:
            console.error(str(error))
            return EXIT_ERROR
    console.out.write(render(plan, args.format, str(args.repo)))
    if args.out:
        try:
            args.out.write_bytes(orjson.dumps(plan_to_dict(plan), option=orjson.OPT_INDENT_2))
        except OSError as error:
            console.error(f"cannot save the plan to {args.out}: {options.os_problem(error)}")
            return EXIT_ERROR
        console.progress(
            f"saved the plan to {args.out}; apply it with `reconcile apply {args.out}`"
        )
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK
