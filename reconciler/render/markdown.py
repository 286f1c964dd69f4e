"""The plan as a Markdown pull-request comment."""

from __future__ import annotations

from collections import Counter

from reconciler.core.plan import Plan
from reconciler.render.text import render_text, run_lines

_ICON = {"create": "+", "update": "~", "delete": "-"}


def render_markdown(plan: Plan) -> str:
    """A PR comment: a summary table, the canary runs, and the full plan folded away."""
    summary = plan.summary
    head = plan.revision.label if plan.revision else "working tree"
    lines = [f"### canary-reconciler plan for `{head}`", ""]
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
        lines += ["", "#### Canary runs this plan starts", "", "```"]
        for run in plan.canary_runs:
            lines += run_lines(run)
        lines.append("```")
    if warnings:
        lines += ["", "#### Warnings", ""]
        lines += [f"- `{w.path}:{w.line}` {w.subject}: {w.message}" for w in warnings]
    if notices:
        lines += ["", "#### Notices", ""]
        lines += [f"- `{n.path}:{n.line}` {n.subject}: {n.message}" for n in notices]
    if plan.changes:
        lines += ["", "<details><summary>Full plan</summary>", "", "```diff"]
        lines += render_text(plan).rstrip("\n").splitlines()
        lines += ["```", "", "</details>"]
    return "\n".join(lines) + "\n"
