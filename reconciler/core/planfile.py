"""The JSON form of a plan: what `--format json` prints and what `apply plan.json` reads."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.plan import (
    FORMAT_VERSION,
    CanaryRun,
    Change,
    FieldChange,
    Plan,
    Revision,
    StateRef,
)
from reconciler.core.resources import canonical_json
from reconciler.core.weights import Step, StepSchedule


class PlanFileError(ValueError):
    """A saved plan that cannot be read."""


def _diagnostic(d: Diagnostic) -> dict[str, Any]:
    return {
        "severity": d.severity,
        "file": d.path,
        "line": d.line,
        "column": d.column,
        "subject": d.subject,
        "field": d.field,
        "message": d.message,
    }


def _change(change: Change) -> dict[str, Any]:
    data: dict[str, Any] = {
        "address": change.address,
        "kind": change.kind,
        "name": change.name,
        "actions": [change.action],
        "before": change.before,
        "after": change.after,
        "reason": change.reason,
        "fingerprint": change.fingerprint,
    }
    if change.run_fingerprint is not None:
        data["run_fingerprint"] = change.run_fingerprint
    if change.kind == "DerivedCanary":
        data["parent"] = change.parent
        data["agent"] = change.agent
    if change.fields:
        data["fields"] = [asdict(f) for f in change.fields]
    return data


def _run(run: CanaryRun) -> dict[str, Any]:
    return {
        "route": run.route,
        "reason": run.reason,
        "run_fingerprint": run.run_fingerprint,
        "canary_group": run.schedule.canary_group,
        "min_duration_seconds": run.schedule.min_duration_seconds,
        "steps": [
            {"weight": s.weight, "pause": s.pause, "weights": s.weights} for s in run.schedule.steps
        ],
        "replaces": run.replaces,
    }


def _checksum(document: dict[str, Any]) -> str:
    body = {key: value for key, value in document.items() if key != "checksum"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The versioned JSON document of a plan, sealed with a checksum of its content."""
    summary = plan.summary
    document = {
        "format_version": FORMAT_VERSION,
        "valid": True,
        "state": asdict(plan.state) if plan.state else None,
        "base": asdict(plan.base) if plan.base else None,
        "revision": asdict(plan.revision) if plan.revision else None,
        "summary": {"add": summary.add, "change": summary.change, "destroy": summary.destroy},
        "changes": [_change(c) for c in plan.changes],
        "canary_runs": [_run(r) for r in plan.canary_runs],
        "diagnostics": [_diagnostic(d) for d in plan.diagnostics],
        "not_driven": [
            {"route": route, "reasons": list(reasons)} for route, reasons in plan.not_driven
        ],
    }
    document["checksum"] = _checksum(document)
    return document


def _read_change(data: dict[str, Any]) -> Change:
    return Change(
        kind=data["kind"],
        name=data["name"],
        action=data["actions"][0],
        before=data.get("before"),
        after=data.get("after"),
        reason=data.get("reason", ""),
        fingerprint=data.get("fingerprint"),
        run_fingerprint=data.get("run_fingerprint"),
        parent=data.get("parent"),
        agent=data.get("agent"),
        fields=tuple(FieldChange(**f) for f in data.get("fields", [])),
    )


def _read_run(data: dict[str, Any]) -> CanaryRun:
    steps = tuple(Step(s["weight"], s["pause"], dict(s["weights"])) for s in data["steps"])
    schedule = StepSchedule(
        data["route"], data["canary_group"], steps, float(data["min_duration_seconds"])
    )
    replaces = data.get("replaces")  # absent from plans saved before it was written
    return CanaryRun(
        data["route"],
        data["reason"],
        data["run_fingerprint"],
        schedule,
        replaces if isinstance(replaces, str) else None,
    )


def plan_from_dict(data: Any) -> Plan:
    """Read a plan saved with `--out`.

    Raises:
        PlanFileError: the document is not a plan this version can apply.
    """
    if not isinstance(data, dict) or "format_version" not in data:
        raise PlanFileError("not a canary-reconciler plan (no format_version)")
    major = str(data["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise PlanFileError(
            f"plan format {data['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    if data.get("checksum") != _checksum(data):
        raise PlanFileError("the plan was modified after it was made (checksum mismatch)")
    if data.get("base"):
        raise PlanFileError("a plan made against --base cannot be applied; plan against --state")
    try:
        state = StateRef(**data["state"]) if data.get("state") else None
        revision = Revision(**data["revision"]) if data.get("revision") else None
        changes = tuple(_read_change(c) for c in data["changes"])
        runs = tuple(_read_run(r) for r in data["canary_runs"])
        not_driven = tuple((n["route"], tuple(n["reasons"])) for n in data.get("not_driven", []))
    except (KeyError, TypeError, IndexError) as error:
        raise PlanFileError(f"malformed plan: {error!r}") from error
    return Plan(state, revision, changes, runs, not_driven=not_driven)
