"""The `reconcile` command line: a thin layer over reconciler.session."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

import orjson

from reconciler import __version__
from reconciler.cli.canary import add_canary_command, run_canary
from reconciler.cli.demo import add_demo_command, run_demo
from reconciler.cli.schema_files import write_json_schemas
from reconciler.cli.serve import add_server_commands, run_agents, run_serve
from reconciler.cli.site import add_site_command, run_site
from reconciler.core.plan import Plan
from reconciler.core.planfile import PlanFileError, plan_from_dict, plan_to_dict
from reconciler.render.github import render_annotations
from reconciler.render.markdown import render_markdown
from reconciler.render.text import diagnostic_lines, render_text
from reconciler.session import Loaded, Session, Settings, SourceError
from reconciler.store.db import StateError, open_state
from reconciler.store.resources import ApplyResult, list_revisions

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
DEFAULT_STATE = "reconciler.duckdb"

DESCRIPTION = """\
Synthetic monitoring and progressive delivery, managed as code.

Load a config repository of YAML (Regions, Agents, Canaries, Routes), compile the
desired state, diff it against a DuckDB state file, print the plan and apply it.
"""

EPILOG = """\
examples:
  reconcile validate --repo sample-repo
  reconcile --plan --repo sample-repo --state reconciler.duckdb
  reconcile plan --repo . --ref HEAD --base origin/main --format markdown
  reconcile plan --repo sample-repo --out plan.json && reconcile apply plan.json
  reconcile apply --repo sample-repo --auto-approve

exit codes: 0 success (with --detailed-exitcode: no changes), 1 error or invalid
config, 2 changes present (only with --detailed-exitcode).
environment: RECONCILER_STATE (default state file), RECONCILER_LOCAL_REGION.
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; here 2 means "changes", so usage errors exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class _Console:
    """Where output goes: results on stdout, progress and errors on stderr."""

    def __init__(self, out: TextIO, err: TextIO, quiet: bool) -> None:
        self.out, self.err, self.quiet = out, err, quiet

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"reconcile: {message}", file=self.err)

    def error(self, message: str) -> None:
        print(f"Error: {message}", file=self.err)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="config repository directory (default: .)"
    )
    parser.add_argument(
        "--ref",
        help="git ref to read instead of the working tree (read from git objects, no checkout)",
    )
    parser.add_argument(
        "--local-region",
        default=os.environ.get("RECONCILER_LOCAL_REGION", "default"),
        help="the control plane's own region, where 'local' checks run (default: %(default)s)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _add_state_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("RECONCILER_STATE", DEFAULT_STATE)),
        help="DuckDB state file (default: $RECONCILER_STATE or %(default)s)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for another process holding the state file (default: 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="reconcile",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    validate = commands.add_parser(
        "validate",
        help="check the config repository; exit 1 on any error",
        description="Load every YAML file and report every error as "
        "path:line:column: kind/name: field: message. Exit 1 on any error.",
    )
    _add_source_arguments(validate)
    validate.add_argument("--format", choices=["text", "github"], default="text")

    plan = commands.add_parser(
        "plan",
        help="show what applying the config would change (alias: --plan)",
        description="Compile the desired state and diff it against a state file "
        "(--state) or the desired state of another git ref (--base).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(plan)
    _add_state_argument(plan)
    plan.add_argument(
        "--base", metavar="REF", help="diff against this git ref's config, not the state file"
    )
    plan.add_argument("--format", choices=["text", "json", "markdown", "github"], default="text")
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    plan.add_argument(
        "--out", type=Path, metavar="FILE", help="save the plan as JSON for `reconcile apply FILE`"
    )

    apply = commands.add_parser(
        "apply",
        help="apply the config (or a saved plan) to the state file",
        description="Plan and apply in one DuckDB transaction, or apply exactly a plan "
        "saved with `plan --out` (refused when the state changed since).",
    )
    apply.add_argument("plan_file", nargs="?", type=Path, metavar="PLAN", help="saved plan")
    _add_source_arguments(apply)
    _add_state_argument(apply)
    apply.add_argument(
        "--auto-approve", action="store_true", help="apply without asking for confirmation"
    )

    schema = commands.add_parser(
        "schema",
        help="write the JSON Schema of every kind",
        description="Write one JSON Schema per document kind, for editors and other tools.",
    )
    schema.add_argument("--out", type=Path, required=True, metavar="DIR")

    add_server_commands(commands, _Parser)
    add_canary_command(commands)
    add_site_command(commands)
    add_demo_command(commands)

    revisions = commands.add_parser("revisions", help="list the revisions applied to a state")
    _add_state_argument(revisions)
    revisions.add_argument("--limit", type=int, default=20)
    return parser


def _normalise(argv: Sequence[str]) -> list[str]:
    """`reconcile --plan ...` is `reconcile plan ...`."""
    args = list(argv)
    if "--plan" in args:
        args.remove("--plan")
        args.insert(0, "plan")
    return args


def _load(args: argparse.Namespace, session: Session, console: _Console) -> Loaded | None:
    started = time.perf_counter()
    try:
        loaded = session.load(args.repo, args.ref)
    except SourceError as error:
        console.error(str(error))
        return None
    documents = len(loaded.result.config.regions) + len(loaded.result.config.agents)
    documents += len(loaded.result.config.canaries) + len(loaded.result.config.routes)
    console.progress(
        f"loaded {documents} documents from {loaded.files} files "
        f"in {time.perf_counter() - started:.2f}s ({loaded.revision.label})"
    )
    return loaded


def _report_invalid(loaded: Loaded, fmt: str, console: _Console, root: str) -> None:
    errors = [d for d in loaded.diagnostics if d.severity == "error"]
    if fmt == "github":
        console.out.write(render_annotations(loaded.diagnostics, root))
    elif fmt == "json":
        document = {
            "format_version": "1.0",
            "valid": False,
            "diagnostics": plan_to_dict(Plan(None, loaded.revision, diagnostics=tuple(errors)))[
                "diagnostics"
            ],
        }
        console.out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "markdown":
        console.out.write(f"### canary-reconciler: {len(errors)} error(s)\n\n")
        console.out.writelines(f"- `{d.format()}`\n" for d in errors)
    for line in diagnostic_lines(loaded.diagnostics):
        print(line, file=console.err)
    console.error(f"the configuration has {len(errors)} error(s); nothing was planned")


def _validate(args: argparse.Namespace, console: _Console) -> int:
    loaded = _load(args, Session(Settings(args.local_region)), console)
    if loaded is None:
        return EXIT_ERROR
    if args.format == "github":
        console.out.write(render_annotations(loaded.diagnostics, str(args.repo)))
    for line in diagnostic_lines(loaded.diagnostics):
        print(line, file=console.err if args.format == "github" else console.out)
    if not loaded.ok:
        errors = sum(1 for d in loaded.diagnostics if d.severity == "error")
        console.error(f"{errors} error(s) in {args.repo}")
        return EXIT_ERROR
    desired = loaded.desired
    assert desired is not None
    derived = sum(1 for r in desired.resources.values() if r.kind == "DerivedCanary")
    print(
        f"{args.repo}: valid ({len(desired.resources) - derived} documents, "
        f"{derived} derived canaries, {len(desired.schedules)} canary schedules)",
        file=console.out,
    )
    return EXIT_OK


def _render(plan: Plan, fmt: str, root: str) -> str:
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


def _plan(args: argparse.Namespace, console: _Console) -> int:
    if args.out and args.base:
        console.error("--out saves plans made against a state file; it cannot be used with --base")
        return EXIT_ERROR
    session = Session(Settings(args.local_region, args.lock_timeout))
    loaded = _load(args, session, console)
    if loaded is None:
        return EXIT_ERROR
    if not loaded.ok:
        _report_invalid(loaded, args.format, console, str(args.repo))
        return EXIT_ERROR
    try:
        if args.base:
            plan = session.plan_against_base(loaded, args.repo, args.base)
        else:
            plan = session.plan_against_state(loaded, args.state)
    except (SourceError, StateError) as error:
        console.error(str(error))
        return EXIT_ERROR
    console.out.write(_render(plan, args.format, str(args.repo)))
    if args.out:
        args.out.write_bytes(orjson.dumps(plan_to_dict(plan), option=orjson.OPT_INDENT_2))
        console.progress(
            f"saved the plan to {args.out}; apply it with `reconcile apply {args.out}`"
        )
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def _applied(result: ApplyResult, console: _Console) -> None:
    summary = result.summary
    if not result.wrote:
        return
    if summary.empty and not result.canary_runs:
        print(
            f"Recorded the revision; no resource changed. State serial {result.state.serial}.",
            file=console.out,
        )
        return
    runs = f", {len(result.canary_runs)} canary run(s) started" if result.canary_runs else ""
    print(
        f"Apply complete! Resources: {summary.add} added, {summary.change} changed, "
        f"{summary.destroy} destroyed{runs}. State serial {result.state.serial}.",
        file=console.out,
    )


def _confirm(plan: Plan, console: _Console) -> bool:
    if not sys.stdin.isatty():
        console.error(
            "refusing to apply without confirmation: stdin is not a terminal; "
            "pass --auto-approve to apply from scripts"
        )
        return False
    answer = input("\nDo you want to apply these changes? Only 'yes' will be accepted: ")
    return answer.strip() == "yes"


def _now() -> datetime:
    return datetime.now(UTC)


def _apply(args: argparse.Namespace, console: _Console) -> int:
    session = Session(Settings(args.local_region, args.lock_timeout))
    try:
        if args.plan_file is not None:
            return _apply_saved(args, session, console)
        loaded = _load(args, session, console)
        if loaded is None:
            return EXIT_ERROR
        if not loaded.ok:
            _report_invalid(loaded, "text", console, str(args.repo))
            return EXIT_ERROR

        def approve(plan: Plan) -> bool:
            console.out.write(render_text(plan))
            console.out.flush()
            return bool(args.auto_approve) or _confirm(plan, console)

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
    return EXIT_OK


def _apply_saved(args: argparse.Namespace, session: Session, console: _Console) -> int:
    try:
        plan = plan_from_dict(orjson.loads(args.plan_file.read_bytes()))
    except (OSError, orjson.JSONDecodeError, PlanFileError) as error:
        console.error(f"cannot read the plan {args.plan_file}: {error}")
        return EXIT_ERROR
    result = session.apply_saved(plan, args.state, _now)
    console.out.write(render_text(plan))
    _applied(result, console)
    return EXIT_OK


def _schema(args: argparse.Namespace, console: _Console) -> int:
    for path in write_json_schemas(args.out):
        print(path, file=console.out)
    return EXIT_OK


def _revisions(args: argparse.Namespace, console: _Console) -> int:
    try:
        connection = open_state(args.state, read_only=True, lock_timeout=args.lock_timeout)
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    if connection is None:
        console.error(f"{args.state} does not exist yet; run `reconcile apply` first")
        return EXIT_ERROR
    with connection:
        for row in list_revisions(connection, args.limit):
            sha = (row.sha or "-")[:12]
            print(
                f"{row.serial:>6}  {sha:<12}  {row.applied_at:%Y-%m-%d %H:%M:%S}  "
                f"+{row.added} ~{row.changed} -{row.destroyed}  {row.message or ''}",
                file=console.out,
            )
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(_normalise(sys.argv[1:] if argv is None else argv))
    console = _Console(out or sys.stdout, err or sys.stderr, getattr(args, "quiet", False))
    handlers: dict[str, Callable[[argparse.Namespace, _Console], int]] = {
        "validate": _validate,
        "plan": _plan,
        "apply": _apply,
        "schema": _schema,
        "revisions": _revisions,
        "serve": lambda a, c: run_serve(a, c.err),
        "agents": lambda a, c: run_agents(a, c.out, c.err),
        "canary": lambda a, c: run_canary(a, c.out, c.err),
        "site": lambda a, c: run_site(a, c.out, c.err),
        "demo": lambda a, c: run_demo(a, c.out, c.err),
    }
    if args.command is None:
        parser.print_help(console.out)
        return EXIT_ERROR
    return handlers[args.command](args, console)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
