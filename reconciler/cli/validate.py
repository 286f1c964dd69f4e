"""`reconcile validate`: load the config and report every error, touching no state."""

from __future__ import annotations

import argparse

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands

NAME = "validate"


def register(commands: Subcommands) -> None:
    """Add `validate` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="check the config repository; exit 1 on any error",
        description="Load every YAML file and report every error as "
        "path:line:column: kind/name: field: message. Exit 1 on any error.",
    )
    options.add_source(parser)
    options.add_quiet(parser)
    options.add_format(
        parser,
        ["text", "github"],
        help="github: GitHub Actions annotations on stdout, plain diagnostics on stderr",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Report the diagnostics; 0 when valid (warnings allowed), 1 on any error."""
    from reconciler.cli.loading import load
    from reconciler.render.github import render_annotations
    from reconciler.render.text import diagnostic_lines
    from reconciler.session import Session, Settings

    loaded = load(args, Session(Settings(args.local_region)), console)
    if loaded is None:
        return EXIT_ERROR
    if args.format == "github":
        console.out.write(render_annotations(loaded.diagnostics, str(args.repo)))
    for line in diagnostic_lines(loaded.diagnostics):
        (console.note if args.format == "github" else console.say)(line)
    if not loaded.ok:
        errors = sum(1 for d in loaded.diagnostics if d.severity == "error")
        console.error(f"{errors} error(s) in {args.repo}")
        return EXIT_ERROR
    desired = loaded.desired
    assert desired is not None
    derived = sum(1 for r in desired.resources.values() if r.kind == "DerivedCanary")
    console.say(
        f"{args.repo}: valid ({loaded.result.config.documents} documents, "
        f"{derived} derived canaries, {len(desired.schedules)} canary schedules)"
    )
    return EXIT_OK
