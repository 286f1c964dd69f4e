"""The plan as a Markdown pull-request comment."""

from __future__ import annotations

import re
from collections import Counter

from reconciler.core.plan import Plan
from reconciler.render.text import render_text, run_lines

_ICON = {"create": "+", "update": "~", "delete": "-"}
# The most a GitHub comment body holds (characters); a longer one is refused, not cut.
COMMENT_LIMIT = 65_536
# Warnings or notices listed at most; the rest are counted.
LISTED = 100


def code_span(text: str) -> str:
    """`text` as one Markdown code span that nothing in it can end: on one line, between more
    backticks than any run of them in it. What the config says (field names, values, file
    names) is shown this way, so that it cannot add headings, mentions or images to a
    pull-request comment."""
    line = text.replace("\r", "\\r").replace("\n", "\\n")
    fence = "`" * (_longest_backticks(line) + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    return f"{fence}{pad}{line}{pad}{fence}"


def _block_fence(lines: list[str]) -> str:
    """A code block's fence that no line of it can close (longer than any backtick run)."""
    return "`" * max(3, max(map(_longest_backticks, lines), default=0) + 1)


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def render_markdown(plan: Plan) -> str:
    """A PR comment: a summary table, the canary runs, and the full plan folded away."""
    summary = plan.summary
    head = plan.revision.label if plan.revision else "working tree"
    lines = [f"### canary-reconciler plan for {code_span(head)}", ""]
    errors = [d for d in plan.diagnostics if d.severity == "error"]
    warnings = [d for d in plan.diagnostics if d.severity == "warning"]
    notices = [d for d in plan.diagnostics if d.severity == "notice"]
    if errors:
        lines.append(f"**{len(errors)} error(s)**: the configuration is invalid.")
    if not plan.changes and not plan.canary_runs:
        lines.append("**No changes.** The state matches the configuration.")
    else:
        lines.append(
            f"**Plan:** {summary.add} to add, {summary.change} to change, "
            f"{summary.destroy} to destroy."
        )
        lines += ["", "| kind | create | update | delete |", "|---|---:|---:|---:|"]
        counts = Counter((c.kind, c.action) for c in plan.changes)
        for kind in dict.fromkeys(c.kind for c in plan.changes):
            row = [str(counts[(kind, action)]) for action in ("create", "update", "delete")]
            lines.append(f"| {kind} | " + " | ".join(row) + " |")
    if plan.canary_runs:
        runs = [line for run in plan.canary_runs for line in run_lines(run)]
        fence = _block_fence(runs)
        lines += ["", "#### Canary runs this plan starts", "", fence, *runs, fence]
    for title, found in (("Warnings", warnings), ("Notices", notices)):
        if found:
            lines += ["", f"#### {title}", ""]
            lines += [f"- {code_span(d.format())}" for d in found[:LISTED]]
            if len(found) > LISTED:
                lines.append(
                    f"- … and {len(found) - LISTED} more (`reconcile plan` lists them all)"
                )
    if plan.changes:
        text = render_text(plan).rstrip("\n").splitlines()
        fence = _block_fence(text)
        lines += ["", "<details><summary>Full plan</summary>", "", f"{fence}diff"]
        lines += _within(text, _room(lines))
        lines += [fence, "", "</details>"]
    return "\n".join(lines) + "\n"


# What the closing of the plan's block and the line saying what was left out may take.
_RESERVE = 400


def _room(lines: list[str]) -> int:
    """Characters left for the plan's lines under `COMMENT_LIMIT`."""
    return COMMENT_LIMIT - _RESERVE - sum(len(line) + 1 for line in lines)


def _within(plan: list[str], room: int) -> list[str]:
    """The plan's first lines that fit in `room` characters, and a line counting the rest."""
    used = 0
    for index, line in enumerate(plan):
        used += len(line) + 1
        if used > room:
            left = len(plan) - index
            return plan[:index] + [
                f"… {left:,} more lines of the plan are not shown: a comment holds "
                f"{COMMENT_LIMIT:,} characters; run `reconcile plan` for the whole plan"
            ]
    return plan
