"""The incidents and canary deployments pages."""

from __future__ import annotations

from typing import Any

from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.layout import base_context, stamp
from reconciler.sitebuild.model import DEPLOYMENTS, INCIDENTS, Snapshot, canary_path, link
from reconciler.sitebuild.windows import WINDOWS


def incidents_context(snapshot: Snapshot) -> dict[str, Any]:
    """Incidents, open ones first, each with its timeline of region changes."""
    pages = {canary.key: canary.ident for canary in snapshot.canaries}
    incidents = []
    for incident in snapshot.incidents:
        ident = pages.get(incident["canary"])
        incidents.append(
            {
                "id": incident["id"],
                "canary": incident["canary"],
                "href": link(INCIDENTS, canary_path(ident, WINDOWS[0])) if ident else None,
                "state": incident["state"],
                "opened": fmt.stored_moment(incident["opened_at"]),
                "opened_iso": incident["opened_at"],
                "resolved": (
                    fmt.stored_moment(incident["resolved_at"]) if incident["resolved_at"] else None
                ),
                "resolved_iso": incident["resolved_at"],
                "lasted": (
                    fmt.lasted(incident["opened_at"], incident["resolved_at"])
                    if incident["resolved_at"]
                    else None
                ),
                "regions_down": ", ".join(incident["regions_down"]) or "none",
                # Once resolved, no region is down: the page says which ones were.
                "regions_were_down": ", ".join(
                    sorted({e["region"] for e in incident["timeline"] if e["change"] == "down"})
                )
                or "none recorded",
                "timeline": [
                    {
                        "at": fmt.stored_moment(entry["at"]),
                        "at_iso": entry["at"],
                        "region": entry["region"],
                        "change": entry["change"],
                    }
                    for entry in incident["timeline"]
                ],
            }
        )
    return {
        **base_context(INCIDENTS, "Incidents", "incidents"),
        **stamp(snapshot),
        "heading": "Incidents",
        "incidents": incidents,
        "open": sum(1 for i in incidents if i["state"] == "open"),
    }


def _limit(value: str, limit: str | None, failed: bool) -> dict[str, Any]:
    return {"value": value, "limit": limit, "failed": failed}


def _evaluation(evaluation: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's values next to the thresholds they were judged by."""
    limits = evaluation.get("thresholds") or {}
    failed = set(evaluation.get("failed_rules") or [])
    error_limit = limits.get("error_threshold")
    latency_limit = limits.get("latency_threshold_ms")
    return {
        "at": fmt.stored_moment(evaluation.get("at")),
        "at_iso": evaluation.get("at"),
        "step": int(evaluation.get("step", -1)) + 1,
        "verdict": evaluation.get("verdict"),
        "reason": evaluation.get("reason"),
        "cells": [
            _limit(
                fmt.count(int(evaluation.get("canary_requests") or 0)),
                f"≥ {fmt.count(int(limits['min_requests']))}" if "min_requests" in limits else None,
                False,
            ),
            _limit(
                fmt.rate(evaluation.get("canary_error_rate")),
                f"≤ {fmt.rate(error_limit)}" if error_limit is not None else None,
                "error_threshold" in failed,
            ),
            _limit(
                fmt.millis(evaluation.get("canary_p99_ms")),
                f"≤ {fmt.millis(latency_limit)}" if latency_limit is not None else None,
                "latency_threshold" in failed,
            ),
            _limit(
                fmt.ratio(evaluation.get("error_rate_ratio")),
                f"≤ {fmt.ratio(limits.get('max_error_rate_increase'))}",
                "max_error_rate_increase" in failed,
            ),
            _limit(
                fmt.ratio(evaluation.get("latency_ratio")),
                f"≤ {fmt.ratio(limits.get('max_latency_increase'))}",
                "max_latency_increase" in failed,
            ),
        ],
    }


# A canary run's state in words (core/deployment.py's RunStatus).
STATE_LABELS = {
    "pending": "Pending",
    "progressing": "Progressing",
    "paused": "Paused",
    "completed": "Completed",
    "rolled_back": "Rolled back",
}
# What the weights applied after a final state are, where they may surprise.
WEIGHTS_NOTES = {
    "rolled_back": "After a rollback the route takes the weights its rollback_to chose: with "
    "original (the default) that is the configured traffic_split, the canary group's own "
    "share included; zero takes the canary group out.",
}


def deployments_context(snapshot: Snapshot) -> dict[str, Any]:
    """Each route's latest canary run: state, current step, weights, steps and evaluations."""
    deployments = []
    for run in snapshot.deployments:
        steps = run.get("steps") or []
        step = int(run.get("step", -1))
        deployments.append(
            {
                "route": run["route"],
                "run": run["run"],
                "state": run["state"],
                "state_label": STATE_LABELS.get(run["state"], str(run["state"])),
                "weights_note": WEIGHTS_NOTES.get(run["state"], ""),
                "reason": run.get("reason") or "",
                "step": (
                    f"step {step + 1} of {len(steps)}"
                    if step >= 0
                    else f"not started ({len(steps)} steps)"
                ),
                "failures": run.get("consecutive_failures", 0),
                "weights": sorted((run.get("weights") or {}).items()),
                "steps": [
                    {
                        "number": index + 1,
                        "weight": s.get("weight"),
                        "pause": s.get("pause") or "until promoted"
                        if index == len(steps) - 1
                        else s.get("pause") or "—",
                        "weights": ", ".join(
                            f"{g} {w}%" for g, w in (s.get("weights") or {}).items()
                        ),
                        "current": index == step,
                    }
                    for index, s in enumerate(steps)
                ],
                "evaluations": [_evaluation(e) for e in run.get("evaluations", [])],
            }
        )
    return {
        **base_context(DEPLOYMENTS, "Canary deployments", "deployments"),
        **stamp(snapshot),
        "heading": "Canary deployments",
        "deployments": deployments,
    }
