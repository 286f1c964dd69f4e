"""The text plan, in Terraform's grammar: `+` create, `~` update, `-` delete."""

from __future__ import annotations

from typing import Any

import orjson

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.diff import flatten
from reconciler.core.plan import CanaryRun, Change, FieldChange, Plan
from schemas.durations import format_duration

_SYMBOL = {"create": "+", "update": "~", "delete": "-"}
_VERB = {"create": "created", "update": "updated in-place", "delete": "destroyed"}
# Items of a list the text plan prints; longer lists (a fleet-wide maintenance window's
# `selected` canaries) end in "… N more", and a changed one shows what came and went. The
# JSON plan (`--format json`) always has every item.
LIST_SHOWN = 10


def value_text(value: Any) -> str:
    """A value as JSON, the way plans show it (a long list cut to its first `LIST_SHOWN`)."""
    if isinstance(value, list) and len(value) > LIST_SHOWN:
        shown = orjson.dumps(value[:LIST_SHOWN]).decode()[:-1]
        return f"{shown}, … {len(value) - LIST_SHOWN} more] ({len(value)} items)"
    return orjson.dumps(value).decode()


def _change_text(before: Any, after: Any) -> str:
    """`before -> after`; for long lists, the items added and removed instead."""
    lists = isinstance(before, list) and isinstance(after, list)
    if not lists or max(len(before), len(after)) <= LIST_SHOWN:
        return f"{value_text(before)} -> {value_text(after)}"
    added = [item for item in after if item not in before]
    removed = [item for item in before if item not in after]
    parts = [f"{len(before)} -> {len(after)} items"]
    if added:
        parts.append(f"+ {value_text(added)}")
    if removed:
        parts.append(f"- {value_text(removed)}")
    if not added and not removed:
        parts.append("the same items in another order")
    return ", ".join(parts)


def _field_lines(fields: list[FieldChange], symbol: str) -> list[str]:
    width = max((len(f.path) for f in fields), default=0)
    lines = []
    for change in fields:
        if symbol == "~":
            if change.before is None:
                mark, text = "+", value_text(change.after)
            elif change.after is None:
                mark, text = "-", f"{value_text(change.before)} -> null"
            else:
                mark, text = "~", _change_text(change.before, change.after)
        else:
            mark = symbol
            text = value_text(change.after if symbol == "+" else change.before)
        lines.append(f"      {mark} {change.path.ljust(width)} = {text}")
    return lines


def _change_lines(change: Change) -> list[str]:
    symbol = _SYMBOL[change.action]
    kind, name = change.address.split(".", 1)
    lines = [f"  # {change.address} will be {_VERB[change.action]} ({change.reason})"]
    if change.kind == "DerivedCanary" and change.action != "update":
        spec = change.after or change.before or {}
        lines.append(
            f'  {symbol} {kind} "{name}" (agent {change.agent}, region {spec.get("region", "?")})'
        )
        return lines
    if change.action == "update":
        fields = list(change.fields)
    elif change.action == "create":
        fields = [FieldChange(path, None, value) for path, value in flatten(change.after)]
    else:
        fields = [FieldChange(path, value, None) for path, value in flatten(change.before)]
    lines.append(f'  {symbol} {kind} "{name}" {{')
    lines += _field_lines(fields, symbol)
    lines.append("    }")
    return lines


def run_lines(run: CanaryRun) -> list[str]:
    """A canary run as a small table: one row per step, one column per group."""
    schedule = run.schedule
    groups = list(schedule.steps[0].weights) if schedule.steps else []
    ordered = [schedule.canary_group] + [g for g in groups if g != schedule.canary_group]
    minimum = format_duration(schedule.min_duration_seconds)
    lines = [
        f'  route "{run.route}": canary group "{schedule.canary_group}", '
        f"{len(schedule.steps)} steps, at least {minimum} ({run.reason})"
    ]
    if run.replaces is not None:
        lines.append(
            f"    replaces run {run.replaces}: it is abandoned (superseded, not rolled back) "
            "and the route goes to this run's weights"
        )
    header = ["step"] + ordered + ["hold"]
    rows = [
        [str(index)] + [f"{step.weights[g]}%" for g in ordered] + [step.pause or "-"]
        for index, step in enumerate(schedule.steps, 1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("    " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    return lines


_LABEL = {"error": "Error: ", "warning": "Warning: ", "notice": "Notice: "}


def diagnostic_lines(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> list[str]:
    """Errors, warnings and notices, one per line, in file:line:column form."""
    return [_LABEL[d.severity] + d.format() for d in diagnostics]


def render_text(plan: Plan) -> str:
    """The whole plan as text, ending with the `Plan: ...` summary line."""
    lines: list[str] = []
    if plan.revision:
        lines.append(f"Config revision: {plan.revision.label}")
    if plan.base:
        lines.append(f"Compared with: {plan.base.label} ({plan.base.ref})")
    elif plan.state:
        lines.append(f"State: serial {plan.state.serial}, lineage {plan.state.lineage}")
    else:
        lines.append("State: empty (no state file yet)")
    lines.append("")
    if plan.diagnostics:
        lines += diagnostic_lines(plan.diagnostics) + [""]
    summary = plan.summary
    if not plan.changes and not plan.canary_runs:
        lines.append("No changes. The state matches the configuration.")
        return "\n".join(lines) + "\n"
    if plan.changes:
        lines.append("Reconciler will perform the following actions:")
        lines.append("")
        for change in plan.changes:
            lines += _change_lines(change) + [""]
    if plan.canary_runs:
        lines.append("Canary runs this plan starts:")
        lines.append("")
        for run in plan.canary_runs:
            lines += run_lines(run) + [""]
    lines.append(
        f"Plan: {summary.add} to add, {summary.change} to change, {summary.destroy} to destroy."
    )
    return "\n".join(lines) + "\n"
