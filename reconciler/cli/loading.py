"""Loading the config for validate, plan and apply: the progress line and invalid-config report."""

from __future__ import annotations

import argparse
import time

import orjson

from reconciler.cli.console import Console
from reconciler.core.plan import Plan
from reconciler.core.planfile import plan_to_dict
from reconciler.render.github import render_annotations
from reconciler.render.markdown import code_span
from reconciler.render.text import diagnostic_lines
from reconciler.session import Loaded, Session, SourceError


def load(args: argparse.Namespace, session: Session, console: Console) -> Loaded | None:
    """Load `--repo` at `--ref`; None (the error printed) when it cannot be read."""
    started = time.perf_counter()
    try:
        loaded = session.load(args.repo, args.ref)
    except SourceError as error:
        console.error(str(error))
        return None
    console.progress(
        f"loaded {loaded.result.config.documents} documents from {loaded.files} files "
        f"in {time.perf_counter() - started:.2f}s ({loaded.revision.label})"
    )
    return loaded


def report_invalid(loaded: Loaded, fmt: str, console: Console, root: str) -> None:
    """An invalid config in the requested format on stdout, the plain errors on stderr."""
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
        console.out.writelines(f"- {code_span(d.format())}\n" for d in errors)
    for line in diagnostic_lines(loaded.diagnostics):
        console.note(line)
    console.error(f"the configuration has {len(errors)} error(s); nothing was planned")
