"""The canary-deployment controller's decisions: a pure state machine.

No I/O and no clock: the caller passes `now`, the route spec, its step schedule and the metrics
of each traffic group since the current step started, and stores the returned :class:`RunState`.

States: ``pending -> progressing <-> paused -> completed | rolled_back``.

- Start: ``act(start)`` from pending, or :func:`tick` from pending when ``auto_start`` is set.
  Step 0's weights are applied and the step's clock starts.
- :func:`tick` on a progressing run, in this order, at most one transition per tick:
  1. Evaluate when ``interval`` has passed since the later of the step start and the last
     evaluation (so the first evaluation of a step comes one interval after it starts; interval
     0 evaluates every tick). A pass resets the failure count, a fail adds one, a skip changes
     nothing. The ``max(max_failures, 1)``-th consecutive failure rolls back (0 and 1 both mean
     the first failure rolls back).
  2. ``progress_deadline``: once the step has been active that long without reaching
     ``max(min_requests, 1)`` canary requests, roll back.
  3. Advance when the step's hold (``pause``, none = 0) has passed, the failure count is 0 (the
     last judged evaluation of the step did not fail), and, for a step with a hold and
     ``min_requests > 0``, at least one evaluation of the step passed: a canary is never moved
     on without having been seen healthy on enough traffic. The next step's weights are applied,
     its clock restarts (the caller reads metrics from ``step_started_at``) and the failure
     count resets. Past the last step the run completes at the last step's weights. A step with
     no hold therefore advances at the next tick.
- Paused runs neither evaluate nor advance. Time spent paused does not count towards the hold or
  the progress deadline: after resume the step's clock continues where it stopped. The metrics
  window (``step_started_at``) is not moved by a pause.
- ``promote`` (progressing only) completes with the canary at 100 and every other group at 0.
- ``rollback`` (progressing or paused), like an automatic rollback, applies ``rollback_to``:
  ``original`` restores the route's configured weights, ``zero`` gives the canary 0 and shares
  100 among the other groups by their original ratios.
- Completed and rolled-back runs are final; every action on them is refused.
- The gateway comes first (:func:`refused`): a move forward (start, the next step, completion,
  promote) happens only once the gateway has taken its weights, so a run never advances on
  traffic it does not get; a rollback stands whether or not the gateway took its weights
  (the controller keeps applying them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.core.deployment_analysis import (
    Evaluation,
    GroupSample,
    Thresholds,
    Verdict,
    baseline_group,
    evaluate,
    route_groups,
)
from reconciler.core.weights import StepSchedule, redistribute
from schemas.durations import parse_duration
from schemas.route import CanaryDeployment, RouteSpec

__all__ = [
    "ACTIONS",
    "TRANSITIONS",
    "Evaluation",
    "GroupSample",
    "Refused",
    "RunState",
    "RunStatus",
    "Thresholds",
    "TickResult",
    "Verdict",
    "act",
    "apply_action",
    "baseline_group",
    "evaluate",
    "new_run",
    "next_tick_at",
    "refused",
    "rollback_weights",
    "route_groups",
    "tick",
    "waits_for_gateway",
]

RunStatus = Literal["pending", "progressing", "paused", "completed", "rolled_back"]
Event = dict[str, Any]

ACTIONS = ("start", "pause", "resume", "promote", "rollback")

# Every legal (state, action) pair and the state it leads to; anything else is refused.
TRANSITIONS: Mapping[tuple[RunStatus, str], RunStatus] = {
    ("pending", "start"): "progressing",
    ("progressing", "pause"): "paused",
    ("paused", "resume"): "progressing",
    ("progressing", "promote"): "completed",
    ("progressing", "rollback"): "rolled_back",
    ("paused", "rollback"): "rolled_back",
}
FINAL: frozenset[RunStatus] = frozenset({"completed", "rolled_back"})


@dataclass(frozen=True)
class RunState:
    """One canary run of a route, as stored between ticks.

    `step` is the index into the schedule (-1 before start). `weights` are the group weights
    currently applied. `paused_seconds` is the time the current step spent paused, left out of
    its hold and deadline; `step_passes` and `step_judged` count the current step's passing and
    non-skipped evaluations.
    """

    route: str
    run_id: str
    state: RunStatus = "pending"
    step: int = -1
    step_started_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    consecutive_failures: int = 0
    last_evaluation_at: datetime | None = None
    weights: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    paused_at: datetime | None = None
    paused_seconds: float = 0.0
    step_passes: int = 0
    step_judged: int = 0


@dataclass(frozen=True)
class TickResult:
    """What a tick or an action decided: the new run, the evaluation made (if any), the weights
    to apply when they differ from the run's previous weights, and events to notify."""

    run: RunState
    evaluation: Evaluation | None = None
    weights_changed: dict[str, int] | None = None
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    """An action the run's state does not allow (the HTTP layer answers 409 with `reason`)."""

    reason: str
    action: str
    state: str


def new_run(route: str, run_id: str, spec: RouteSpec) -> RunState:
    """A pending run whose applied weights are the route's configured weights."""
    return RunState(route=route, run_id=run_id, weights=dict(route_groups(spec)))


def rollback_weights(spec: RouteSpec) -> dict[str, int]:
    """The weights a rollback applies, by the canary's `rollback_to`."""
    canary = _canary(spec)
    groups = route_groups(spec)
    if canary.rollback_to == "zero":
        return redistribute(groups, canary.canary_group, 0)
    return dict(groups)


def act(
    run: RunState, action: str, spec: RouteSpec, schedule: StepSchedule, now: datetime
) -> RunState | Refused:
    """Apply a manual action (start|pause|resume|promote|rollback); see :data:`TRANSITIONS`."""
    result = apply_action(run, action, spec, schedule, now)
    return result if isinstance(result, Refused) else result.run


def apply_action(
    run: RunState, action: str, spec: RouteSpec, schedule: StepSchedule, now: datetime
) -> TickResult | Refused:
    """Like :func:`act`, with the weights to apply and the events to notify."""
    refusal = _refusal(run, action, schedule)
    if refusal is not None:
        return refusal
    if action == "start":
        return _start(run, schedule, now, "started by operator")
    if action == "pause":
        paused = replace(run, state="paused", paused_at=now, reason="paused by operator")
        return TickResult(paused, events=[_event("canary_paused", paused)])
    if action == "resume":
        return _resume(run, now)
    if action == "promote":
        weights = redistribute(route_groups(spec), _canary(spec).canary_group, 100)
        return _finish(run, "completed", weights, now, "promoted by operator")
    return _finish(run, "rolled_back", rollback_weights(spec), now, "rolled back by operator")


def tick(
    run: RunState,
    spec: RouteSpec,
    schedule: StepSchedule,
    samples: Mapping[str, GroupSample],
    now: datetime,
) -> TickResult:
    """Advance a run by the rules in the module docstring; a no-op unless it can move."""
    canary = spec.canary
    if canary is None or not canary.enabled:
        return TickResult(run)
    if run.state == "pending":
        if canary.auto_start and schedule.steps:
            return _start(run, schedule, now, "auto_start")
        return TickResult(run)
    if run.state != "progressing":
        return TickResult(run)
    return _progress(run, spec, canary, schedule, samples, now)


def next_tick_at(
    run: RunState,
    spec: RouteSpec,
    schedule: StepSchedule,
    after: datetime,
    held_until: datetime | None = None,
) -> datetime | None:
    """The earliest time a :func:`tick` could change `run`, given it was last ticked at `after`.

    Until then a tick returns the run unchanged, makes no evaluation and announces nothing,
    whatever the samples: they are read only when an evaluation is due or the progress
    deadline passes. None means only an action (or a new run) can move it: pending without
    ``auto_start``, paused, completed, rolled back, or no canary. A time at or before `after`
    means "tick again at once" (``interval: 0s`` evaluates every tick).

    `held_until`: the gateway refused the weights of the run's next move and is not tried
    again before then, so no move forward is looked for earlier (evaluations, which may roll
    back, keep their times).
    """
    canary = spec.canary
    if canary is None or not canary.enabled:
        return None
    if run.state == "pending":
        return _not_before(after, held_until) if canary.auto_start and schedule.steps else None
    if run.state != "progressing" or run.step_started_at is None:
        return None
    analysis = canary.analysis
    since = run.step_started_at
    if run.last_evaluation_at is not None and run.last_evaluation_at > since:
        since = run.last_evaluation_at
    times = [since + timedelta(seconds=parse_duration(analysis.interval))]
    # The step's clock, with the time it spent paused left out (see `_active_seconds`).
    active_from = run.step_started_at + timedelta(seconds=run.paused_seconds)
    pause = schedule.steps[run.step].pause
    hold_ends = active_from + timedelta(seconds=parse_duration(pause) if pause else 0.0)
    if hold_ends > after:
        times.append(_not_before(hold_ends, held_until))
    elif _may_advance(run, canary, schedule, after):
        # A step just entered with its hold over (none, say): at most one transition per
        # tick, so the next tick moves on.
        times.append(_not_before(after, held_until))
    if analysis.progress_deadline is not None and not run.step_judged:
        deadline = active_from + timedelta(seconds=parse_duration(analysis.progress_deadline))
        if deadline > after:
            times.append(deadline)
    return min(times)


def _not_before(at: datetime, held_until: datetime | None) -> datetime:
    return at if held_until is None or held_until <= at else held_until


def waits_for_gateway(before: RunState, after: RunState) -> bool:
    """Whether going from `before` to `after` must wait until the gateway has `after`'s
    weights: a move forward (start, the next step, completion, promote). Pause and resume
    change no weights, and a rollback never waits."""
    if after.state == "completed":
        return before.state != "completed"
    if after.state != "progressing":
        return False
    return before.state == "pending" or after.step != before.step


def refused(before: RunState, result: TickResult) -> TickResult:
    """What stands when the gateway refused the weights `result` needs (`before`: the run the
    tick or action started from).

    A move forward waits (:func:`waits_for_gateway`): the run stays at `before`, with the
    evaluation this tick made counted (its verdict holds, whatever the weights), and
    announces nothing; the controller tries the move again at a later tick. Anything else
    stands as decided: a rollback is never undone because its weights are late, and the
    controller keeps applying them.
    """
    if not waits_for_gateway(before, result.run):
        return result
    evaluation = result.evaluation
    held = before if evaluation is None else _count(before, evaluation)
    return TickResult(held, evaluation)


# --- transitions ---------------------------------------------------------------------------


def _refusal(run: RunState, action: str, schedule: StepSchedule) -> Refused | None:
    if action not in ACTIONS:
        return Refused(
            f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}", action, run.state
        )
    if (run.state, action) not in TRANSITIONS:
        return Refused(_refusal_reason(run.state, action), action, run.state)
    if action == "start" and not schedule.steps:
        return Refused("cannot start: the canary has no steps", action, run.state)
    return None


def _refusal_reason(state: RunStatus, action: str) -> str:
    if state in FINAL:
        return f"cannot {action}: the run is already {state.replace('_', ' ')}"
    allowed = [s for s, a in TRANSITIONS if a == action]
    only = " or ".join(allowed)
    return f"cannot {action} a run that is {state}; {action} is allowed only when {only}"


def _start(run: RunState, schedule: StepSchedule, now: datetime, why: str) -> TickResult:
    first = schedule.steps[0]
    started = _enter_step(replace(run, state="progressing", started_at=now), 0, first.weights, now)
    started = replace(
        started, reason=f"{why}; step 1/{len(schedule.steps)}: canary {first.weight}%"
    )
    return _result(run, started, "canary_started")


def _resume(run: RunState, now: datetime) -> TickResult:
    paused_for = (now - run.paused_at).total_seconds() if run.paused_at else 0.0
    resumed = replace(
        run,
        state="progressing",
        paused_at=None,
        paused_seconds=run.paused_seconds + max(paused_for, 0.0),
        reason="resumed by operator",
    )
    return TickResult(resumed, events=[_event("canary_resumed", resumed)])


def _finish(
    run: RunState, state: RunStatus, weights: dict[str, int], now: datetime, why: str
) -> TickResult:
    finished = replace(
        run, state=state, weights=weights, finished_at=now, paused_at=None, reason=why
    )
    kind = "canary_completed" if state == "completed" else "canary_rolled_back"
    return _result(run, finished, kind)


def _enter_step(run: RunState, index: int, weights: dict[str, int], now: datetime) -> RunState:
    return replace(
        run,
        step=index,
        step_started_at=now,
        weights=dict(weights),
        consecutive_failures=0,
        paused_seconds=0.0,
        step_passes=0,
        step_judged=0,
    )


def _result(
    before: RunState, after: RunState, kind: str, evaluation: Evaluation | None = None
) -> TickResult:
    changed = dict(after.weights) if after.weights != before.weights else None
    return TickResult(after, evaluation, changed, [_event(kind, after)])


def _event(kind: str, run: RunState) -> Event:
    return {
        "type": kind,
        "route": run.route,
        "run": run.run_id,
        "step": run.step,
        "weights": dict(run.weights),
        "reason": run.reason,
    }


# --- progression ---------------------------------------------------------------------------


def _progress(
    run: RunState,
    spec: RouteSpec,
    canary: CanaryDeployment,
    schedule: StepSchedule,
    samples: Mapping[str, GroupSample],
    now: datetime,
) -> TickResult:
    evaluation = None
    if _evaluation_due(run, canary, now):
        baseline = baseline_group(route_groups(spec), canary.canary_group)
        evaluation = evaluate(spec, samples, baseline, now, step=run.step)
        run = _count(run, evaluation)
        limit = max(canary.analysis.max_failures, 1)
        if run.consecutive_failures >= limit:
            why = (
                f"{run.consecutive_failures} consecutive failing evaluation(s) "
                f"(max_failures {canary.analysis.max_failures}): {evaluation.reason}"
            )
            return _with(_finish(run, "rolled_back", rollback_weights(spec), now, why), evaluation)
    missed = _missed_deadline(run, canary, samples, now)
    if missed is not None:
        return _with(_finish(run, "rolled_back", rollback_weights(spec), now, missed), evaluation)
    if _may_advance(run, canary, schedule, now):
        return _with(_advance(run, schedule, now), evaluation)
    return TickResult(run, evaluation)


def _with(result: TickResult, evaluation: Evaluation | None) -> TickResult:
    return replace(result, evaluation=evaluation)


def _count(run: RunState, evaluation: Evaluation) -> RunState:
    """Update the failure and pass counters with an evaluation's verdict."""
    run = replace(run, last_evaluation_at=evaluation.at)
    if evaluation.verdict == "pass":
        return replace(
            run,
            consecutive_failures=0,
            step_passes=run.step_passes + 1,
            step_judged=run.step_judged + 1,
        )
    if evaluation.verdict == "fail":
        return replace(
            run,
            consecutive_failures=run.consecutive_failures + 1,
            step_judged=run.step_judged + 1,
        )
    return run


def _evaluation_due(run: RunState, canary: CanaryDeployment, now: datetime) -> bool:
    assert run.step_started_at is not None
    since = run.step_started_at
    if run.last_evaluation_at is not None and run.last_evaluation_at > since:
        since = run.last_evaluation_at
    return (now - since).total_seconds() >= parse_duration(canary.analysis.interval)


def _active_seconds(run: RunState, now: datetime) -> float:
    """How long the current step has been progressing (time paused left out)."""
    assert run.step_started_at is not None
    return (now - run.step_started_at).total_seconds() - run.paused_seconds


def _missed_deadline(
    run: RunState,
    canary: CanaryDeployment,
    samples: Mapping[str, GroupSample],
    now: datetime,
) -> str | None:
    """Why the step missed its progress deadline, or None."""
    deadline = canary.analysis.progress_deadline
    if deadline is None or _active_seconds(run, now) < parse_duration(deadline):
        return None
    needed = max(canary.analysis.min_requests, 1)
    seen = samples.get(canary.canary_group)
    requests = seen.requests if seen else 0
    if run.step_judged or requests >= needed:
        return None
    return (
        f"progress_deadline {deadline} passed at step {run.step + 1} with "
        f"{requests} of {needed} required canary requests"
    )


def _may_advance(
    run: RunState, canary: CanaryDeployment, schedule: StepSchedule, now: datetime
) -> bool:
    pause = schedule.steps[run.step].pause
    hold = parse_duration(pause) if pause else 0.0
    if _active_seconds(run, now) < hold or run.consecutive_failures:
        return False
    return not (hold > 0 and canary.analysis.min_requests > 0 and run.step_passes == 0)


def _advance(run: RunState, schedule: StepSchedule, now: datetime) -> TickResult:
    total = len(schedule.steps)
    if run.step + 1 >= total:
        why = f"all {total} steps done; canary at {schedule.steps[-1].weight}%"
        return _finish(run, "completed", run.weights, now, why)
    nxt = schedule.steps[run.step + 1]
    moved = _enter_step(run, run.step + 1, nxt.weights, now)
    moved = replace(moved, reason=f"step {moved.step + 1}/{total}: canary {nxt.weight}%")
    return _result(run, moved, "canary_step")


def _canary(spec: RouteSpec) -> CanaryDeployment:
    if spec.canary is None:
        raise ValueError("the route has no canary")
    return spec.canary
