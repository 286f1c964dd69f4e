"""The canary-deployment decision core: state machine, analysis rules, progression (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.deployment import (
    ACTIONS,
    TRANSITIONS,
    GroupSample,
    Refused,
    RunState,
    TickResult,
    act,
    apply_action,
    baseline_group,
    evaluate,
    new_run,
    next_tick_at,
    refused,
    rollback_weights,
    tick,
    waits_for_gateway,
)
from reconciler.core.weights import StepSchedule, step_schedule
from schemas.route import RouteSpec

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ORIGINAL = {"stable": 60, "beta": 30, "canary": 10}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_spec(
    analysis: dict[str, Any] | None = None,
    steps: list[dict[str, Any]] | None = None,
    **canary: Any,
) -> RouteSpec:
    """The seed's 60/30/10 split with a canary; `analysis` and `canary` override fields."""
    return RouteSpec.model_validate(
        {
            "path": "/api",
            "traffic_split": [
                {"name": name, "weight": weight, "backends": [{"url": f"http://{name}:80"}]}
                for name, weight in ORIGINAL.items()
            ],
            "canary": {
                "canary_group": "canary",
                "steps": steps
                if steps is not None
                else [
                    {"weight": 10, "pause": "5m"},
                    {"weight": 40, "pause": "10m"},
                    {"weight": 100},
                ],
                "analysis": {"interval": "1m", **(analysis or {})},
                **canary,
            },
        }
    )


def schedule_of(spec: RouteSpec) -> StepSchedule:
    schedule = step_schedule("api", spec)
    assert schedule is not None
    return schedule


def healthy(canary_requests: int = 1000) -> dict[str, GroupSample]:
    return {
        "canary": GroupSample(canary_requests, 0, 100.0),
        "stable": GroupSample(5000, 5, 100.0),
        "beta": GroupSample(2000, 2, 100.0),
    }


def failing() -> dict[str, GroupSample]:
    return {"canary": GroupSample(1000, 500, 100.0), "stable": GroupSample(5000, 5, 100.0)}


def started(spec: RouteSpec, now: datetime = T0) -> RunState:
    run = act(new_run("api", "run-1", spec), "start", spec, schedule_of(spec), now)
    assert isinstance(run, RunState)
    return run


def in_state(state: str, spec: RouteSpec) -> RunState:
    """A run brought into `state` through legal actions."""
    schedule = schedule_of(spec)
    run = new_run("api", "run-1", spec)
    path = {
        "pending": [],
        "progressing": ["start"],
        "paused": ["start", "pause"],
        "completed": ["start", "promote"],
        "rolled_back": ["start", "rollback"],
    }[state]
    for action in path:
        result = act(run, action, spec, schedule, T0)
        assert isinstance(result, RunState)
        run = result
    assert run.state == state
    return run


def drive(
    run: RunState, spec: RouteSpec, seconds: list[float], samples: dict[str, GroupSample]
) -> list[TickResult]:
    """Tick at each offset from T0 with the same samples; return every result."""
    results = []
    for offset in seconds:
        result = tick(run, spec, schedule_of(spec), samples, at(offset))
        results.append(result)
        run = result.run
    return results


# --- state machine -------------------------------------------------------------------------

STATES = ["pending", "progressing", "paused", "completed", "rolled_back"]
LEGAL = {
    ("pending", "start"): "progressing",
    ("progressing", "pause"): "paused",
    ("paused", "resume"): "progressing",
    ("progressing", "promote"): "completed",
    ("progressing", "rollback"): "rolled_back",
    ("paused", "rollback"): "rolled_back",
}


def test_transition_table_is_exactly_the_documented_one() -> None:
    assert dict(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("state", "action"), [(s, a) for s in STATES for a in ACTIONS])
def test_every_state_action_pair(state: str, action: str) -> None:
    spec = make_spec()
    result = act(in_state(state, spec), action, spec, schedule_of(spec), at(60))
    if (state, action) in LEGAL:
        assert isinstance(result, RunState)
        assert result.state == LEGAL[(state, action)]
    else:
        assert isinstance(result, Refused)
        assert action in result.reason and result.reason
        assert (result.action, result.state) == (action, state)


@pytest.mark.parametrize(
    ("state", "action", "reason"),
    [
        (
            "pending",
            "pause",
            "cannot pause a run that is pending; pause is allowed only when progressing",
        ),
        (
            "progressing",
            "resume",
            "cannot resume a run that is progressing; resume is allowed only when paused",
        ),
        (
            "progressing",
            "start",
            "cannot start a run that is progressing; start is allowed only when pending",
        ),
        ("pending", "rollback", "rollback is allowed only when progressing or paused"),
        ("paused", "promote", "promote is allowed only when progressing"),
        ("completed", "rollback", "cannot rollback: the run is already completed"),
        ("rolled_back", "start", "cannot start: the run is already rolled back"),
    ],
)
def test_refusal_reasons(state: str, action: str, reason: str) -> None:
    spec = make_spec()
    result = act(in_state(state, spec), action, spec, schedule_of(spec), T0)
    assert isinstance(result, Refused)
    assert reason in result.reason


def test_unknown_action_is_refused() -> None:
    spec = make_spec()
    result = act(in_state("progressing", spec), "explode", spec, schedule_of(spec), T0)
    assert isinstance(result, Refused)
    assert "unknown action 'explode'" in result.reason


def test_start_enters_step_zero_and_reports_it() -> None:
    spec = make_spec(steps=[{"weight": 20, "pause": "1m"}, {"weight": 100}])
    result = apply_action(new_run("api", "r", spec), "start", spec, schedule_of(spec), T0)
    assert isinstance(result, TickResult)
    run = result.run
    assert (run.state, run.step, run.step_started_at, run.started_at) == ("progressing", 0, T0, T0)
    assert run.weights == {"stable": 53, "beta": 27, "canary": 20}
    assert result.weights_changed == run.weights
    assert [e["type"] for e in result.events] == ["canary_started"]
    assert result.events[0] == {
        "type": "canary_started",
        "route": "api",
        "run": "r",
        "step": 0,
        "weights": run.weights,
        "reason": run.reason,
    }


def test_start_with_unchanged_weights_reports_no_weight_change() -> None:
    spec = make_spec()  # step 0 is canary 10, as configured
    result = apply_action(new_run("api", "r", spec), "start", spec, schedule_of(spec), T0)
    assert isinstance(result, TickResult)
    assert result.weights_changed is None
    assert result.events[0]["weights"] == ORIGINAL


def test_new_run_is_pending_at_the_configured_weights() -> None:
    run = new_run("api", "r", make_spec())
    assert (run.state, run.step, run.weights) == ("pending", -1, ORIGINAL)


# --- auto_start ----------------------------------------------------------------------------


@pytest.mark.parametrize(("auto_start", "state"), [(True, "progressing"), (False, "pending")])
def test_auto_start(auto_start: bool, state: str) -> None:
    spec = make_spec(auto_start=auto_start)
    result = tick(new_run("api", "r", spec), spec, schedule_of(spec), {}, T0)
    assert result.run.state == state
    assert [e["type"] for e in result.events] == (["canary_started"] if auto_start else [])
    assert result.evaluation is None


def test_disabled_canary_never_moves() -> None:
    spec = make_spec(auto_start=True)
    disabled = make_spec(auto_start=True, enabled=False)
    result = tick(new_run("api", "r", spec), disabled, schedule_of(spec), {}, T0)
    assert result.run.state == "pending"


# --- baseline ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([("stable", 60), ("beta", 30), ("canary", 10)], "stable"),
        ([("zeta", 45), ("alpha", 45), ("canary", 10)], "alpha"),
        ([("ba", 45), ("ab", 45), ("canary", 10)], "ab"),
        ([("b", 30), ("a", 30), ("c", 30), ("canary", 10)], "a"),
        ([("canary", 90), ("small", 10)], "small"),
        ([("old", 0), ("canary", 100), ("older", 0)], "old"),
    ],
)
def test_baseline_is_highest_original_weight_then_alphabetical(
    groups: list[tuple[str, int]], expected: str
) -> None:
    assert baseline_group(groups, "canary") == expected


def test_baseline_uses_original_weights_not_current_ones() -> None:
    spec = make_spec(analysis={"max_error_rate_increase": 1.5})
    run = started(spec)
    result = tick(run, spec, schedule_of(spec), healthy(), at(60))
    assert result.evaluation is not None
    assert result.evaluation.baseline_group == "stable"


def test_baseline_needs_another_group() -> None:
    with pytest.raises(ValueError, match="no traffic group besides"):
        baseline_group([("canary", 100)], "canary")


# --- analysis rules ------------------------------------------------------------------------


def sample(requests: int, errors: int, p99: float | None = 100.0) -> GroupSample:
    return GroupSample(requests, errors, p99)


# (case, analysis, canary, baseline, verdict, failed rules, reason fragment)
RuleCase = tuple[str, dict[str, Any], GroupSample, GroupSample, str, tuple[str, ...], str]
# fmt: off
RULES: list[RuleCase] = [
    ("error threshold crossed", {"error_threshold": 0.05}, sample(100, 6), sample(100, 0),
     "fail", ("error_threshold",), "error_threshold: canary error rate 6.00% (6/100) > 5.00%"),
    ("error threshold equal passes", {"error_threshold": 0.05}, sample(100, 5), sample(100, 0),
     "pass", (), "healthy"),
    ("error threshold 0.3 equal passes (no float rounding)", {"error_threshold": 0.3},
     sample(100, 30), sample(100, 0), "pass", (), "healthy"),
    ("p99 threshold crossed", {"latency_threshold": "500ms"}, sample(100, 0, 501), sample(100, 0),
     "fail", ("latency_threshold",), "latency_threshold: canary p99 501ms > 500ms"),
    ("p99 threshold equal passes", {"latency_threshold": "0.5s"}, sample(100, 0, 500),
     sample(100, 0), "pass", (), "healthy"),
    ("no p99 skips latency", {"latency_threshold": "1ms"}, sample(100, 0, None), sample(100, 0),
     "pass", (), "healthy"),
    ("error ratio crossed", {"max_error_rate_increase": 1.5}, sample(100, 4), sample(100, 2),
     "fail", ("max_error_rate_increase",), "is 2.00x baseline stable 2.00% (2/100) > 1.5x"),
    ("error ratio equal passes", {"max_error_rate_increase": 1.5}, sample(100, 3), sample(100, 2),
     "pass", (), "baseline stable 2.00%"),
    ("error ratio disabled by 0", {"max_error_rate_increase": 0}, sample(100, 50), sample(100, 1),
     "pass", (), "healthy"),
    ("latency ratio crossed", {"max_latency_increase": 2.0}, sample(100, 0, 250),
     sample(100, 0, 100), "fail", ("max_latency_increase",), "canary p99 250ms is 2.50x"),
    ("latency ratio equal passes", {"max_latency_increase": 2.0}, sample(100, 0, 200),
     sample(100, 0, 100), "pass", (), "healthy"),
    ("zero-error baseline skips the ratio", {"max_error_rate_increase": 1.5}, sample(100, 50),
     sample(1000, 0), "pass", (), "error-rate ratio skipped: baseline stable has no errors"),
    ("zero-latency baseline skips the ratio", {"max_latency_increase": 2.0}, sample(100, 0, 900),
     sample(1000, 0, 0), "pass", (), "latency ratio skipped: baseline stable has no latency"),
    ("no baseline p99 skips the ratio", {"max_latency_increase": 2.0}, sample(100, 0, 900),
     sample(1000, 0, None), "pass", (), "latency ratio skipped"),
    ("delta catches the zero-error baseline",
     {"max_error_rate_increase": 1.5, "max_error_rate_delta": 2}, sample(100, 3), sample(1000, 0),
     "fail", ("max_error_rate_delta",), "3.00 points above baseline stable 0.00% (0/1000) > 2"),
    ("delta equal passes exactly", {"max_error_rate_delta": 2}, sample(100, 3), sample(100, 1),
     "pass", (), "healthy"),
    ("delta in percentage points", {"max_error_rate_delta": 0.5}, sample(1000, 16),
     sample(1000, 10), "fail", ("max_error_rate_delta",), "0.60 points above"),
    ("below min_requests skips", {"min_requests": 100, "error_threshold": 0.01}, sample(99, 99),
     sample(100, 0), "skip", (), "min_requests: 99 canary requests < 100 required"),
    ("at min_requests evaluates", {"min_requests": 100, "error_threshold": 0.01}, sample(100, 2),
     sample(100, 0), "fail", ("error_threshold",), "error_threshold"),
    ("no canary requests skips", {}, sample(0, 0, None), sample(100, 0), "skip", (),
     "no canary requests yet"),
    ("no baseline traffic skips comparisons",
     {"max_error_rate_increase": 1.1, "max_error_rate_delta": 0}, sample(100, 50), sample(0, 0),
     "pass", (), "comparative checks skipped: baseline stable served no requests"),
    ("absolute before comparative",
     {"error_threshold": 0.1, "max_error_rate_increase": 1.5, "latency_threshold": "1s"},
     sample(100, 20, 2000), sample(100, 1), "fail",
     ("error_threshold", "latency_threshold", "max_error_rate_increase"), "error_threshold: "),
]
# fmt: on


@pytest.mark.parametrize(
    ("analysis", "canary", "baseline", "verdict", "rules", "fragment"),
    [case[1:] for case in RULES],
    ids=[case[0] for case in RULES],
)
def test_analysis_rules(
    analysis: dict[str, Any],
    canary: GroupSample,
    baseline: GroupSample,
    verdict: str,
    rules: tuple[str, ...],
    fragment: str,
) -> None:
    spec = make_spec(analysis=analysis)
    evaluation = evaluate(spec, {"canary": canary, "stable": baseline}, "stable", T0, step=1)
    assert evaluation.verdict == verdict, evaluation.reason
    assert evaluation.failed_rules == rules
    assert fragment in evaluation.reason
    if rules:
        assert evaluation.reason.startswith(rules[0] + ":")


def test_evaluation_records_values_thresholds_and_counts() -> None:
    spec = make_spec(
        analysis={
            "error_threshold": 0.05,
            "latency_threshold": "500ms",
            "max_error_rate_increase": 1.5,
            "max_latency_increase": 2.0,
            "max_error_rate_delta": 1.0,
            "min_requests": 50,
        }
    )
    samples = {"canary": sample(200, 4, 120.0), "stable": sample(1000, 10, 100.0)}
    evaluation = evaluate(spec, samples, "stable", T0, step=2)
    assert (evaluation.at, evaluation.step, evaluation.verdict) == (T0, 2, "fail")
    assert evaluation.failed_rules == ("max_error_rate_increase",)
    assert (evaluation.canary_group, evaluation.baseline_group) == ("canary", "stable")
    assert (evaluation.canary_requests, evaluation.canary_errors) == (200, 4)
    assert (evaluation.baseline_requests, evaluation.baseline_errors) == (1000, 10)
    assert evaluation.canary_error_rate == pytest.approx(0.02)
    assert evaluation.baseline_error_rate == pytest.approx(0.01)
    assert (evaluation.canary_p99_ms, evaluation.baseline_p99_ms) == (120.0, 100.0)
    assert evaluation.error_rate_ratio == pytest.approx(2.0)
    assert evaluation.latency_ratio == pytest.approx(1.2)
    assert evaluation.error_rate_delta_pp == pytest.approx(1.0)
    limits = evaluation.thresholds
    assert (limits.error_threshold, limits.latency_threshold_ms) == (0.05, 500.0)
    assert (limits.max_error_rate_increase, limits.max_latency_increase) == (1.5, 2.0)
    assert (limits.max_error_rate_delta, limits.min_requests) == (1.0, 50)


def test_group_sample_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        GroupSample(10, 11)
    with pytest.raises(ValueError):
        GroupSample(-1, 0)


# --- interval gating -----------------------------------------------------------------------


def test_no_evaluation_before_the_interval_has_passed() -> None:
    spec = make_spec(analysis={"interval": "1m"}, steps=[{"weight": 10, "pause": "1h"}])
    results = drive(started(spec), spec, [30, 59, 60, 90, 119, 120, 150], healthy())
    evaluated = [r.evaluation.at if r.evaluation else None for r in results]
    assert evaluated == [None, None, at(60), None, None, at(120), None]
    assert results[-1].run.last_evaluation_at == at(120)


def test_zero_interval_evaluates_every_tick() -> None:
    spec = make_spec(analysis={"interval": "0"}, steps=[{"weight": 10, "pause": "1h"}])
    results = drive(started(spec), spec, [1, 2, 3], healthy())
    assert all(r.evaluation is not None for r in results)


# --- failure counting ----------------------------------------------------------------------


@pytest.mark.parametrize(("max_failures", "rollback_at"), [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_max_failures_rolls_back_on_the_nth_consecutive_failure(
    max_failures: int, rollback_at: int
) -> None:
    spec = make_spec(analysis={"max_failures": max_failures, "error_threshold": 0.05})
    results = drive(started(spec), spec, [60, 120, 180, 240], failing())
    states = [r.run.state for r in results]
    assert states.index("rolled_back") == rollback_at - 1
    rolled = results[rollback_at - 1]
    assert rolled.run.consecutive_failures == rollback_at
    assert rolled.evaluation is not None and rolled.evaluation.verdict == "fail"
    assert [e["type"] for e in rolled.events] == ["canary_rolled_back"]
    assert f"(max_failures {max_failures})" in rolled.run.reason
    assert "error_threshold" in rolled.run.reason
    assert [r.run.consecutive_failures for r in results[: rollback_at - 1]] == list(
        range(1, rollback_at)
    )


def test_a_pass_resets_the_failure_count() -> None:
    spec = make_spec(analysis={"max_failures": 3, "error_threshold": 0.05})
    schedule = schedule_of(spec)
    run = started(spec)
    counts = []
    for offset, samples in enumerate(
        [failing(), failing(), healthy(), failing(), failing()], start=1
    ):
        run = tick(run, spec, schedule, samples, at(60 * offset)).run
        counts.append(run.consecutive_failures)
    assert counts == [1, 2, 0, 1, 2]
    assert run.state == "progressing"


def test_a_skip_neither_passes_nor_fails() -> None:
    spec = make_spec(analysis={"max_failures": 3, "error_threshold": 0.05, "min_requests": 100})
    schedule = schedule_of(spec)
    run = started(spec)
    run = tick(run, spec, schedule, failing(), at(60)).run
    result = tick(run, spec, schedule, {"canary": sample(10, 0)}, at(120))
    assert result.evaluation is not None and result.evaluation.verdict == "skip"
    assert result.run.consecutive_failures == 1
    assert result.run.step_passes == 0


def test_the_failure_count_restarts_in_a_new_step() -> None:
    # Step 0 fails twice, recovers and advances; in step 1 the count starts from 0 again,
    # so two more failures are tolerated and the third of step 1 rolls back.
    spec = make_spec(
        analysis={"max_failures": 3, "error_threshold": 0.05},
        steps=[{"weight": 10, "pause": "3m"}, {"weight": 40, "pause": "1h"}],
    )
    schedule = schedule_of(spec)
    run = started(spec)
    plan = [(60, failing()), (120, failing()), (180, healthy())]
    for offset, samples in plan:
        run = tick(run, spec, schedule, samples, at(offset)).run
    assert (run.step, run.consecutive_failures, run.step_started_at) == (1, 0, at(180))
    counts = []
    for offset in (240, 300, 360):
        run = tick(run, spec, schedule, failing(), at(offset)).run
        counts.append((run.state, run.consecutive_failures))
    assert counts == [("progressing", 1), ("progressing", 2), ("rolled_back", 3)]


# --- progression ---------------------------------------------------------------------------


def test_progression_through_every_step_with_redistributed_weights() -> None:
    spec = make_spec(analysis={"min_requests": 10, "error_threshold": 0.05})
    results = drive(started(spec), spec, [60 * m for m in range(1, 17)], healthy())
    steps = [(r.run.step, r.run.state) for r in results]
    # step 0 holds 5m, step 1 holds 10m (from 5m to 15m), step 2 (100, no pause) next tick
    assert steps[3] == (0, "progressing")
    assert steps[4] == (1, "progressing")
    assert steps[13] == (1, "progressing")
    assert steps[14] == (2, "progressing")
    assert steps[15] == (2, "completed")
    changes = [(r.run.step, r.weights_changed) for r in results if r.weights_changed]
    assert changes == [
        (1, {"stable": 40, "beta": 20, "canary": 40}),
        (2, {"stable": 0, "beta": 0, "canary": 100}),
    ]
    events = [(e["type"], e["step"], e["weights"]["canary"]) for r in results for e in r.events]
    assert events == [("canary_step", 1, 40), ("canary_step", 2, 100), ("canary_completed", 2, 100)]
    done = results[-1].run
    assert (done.finished_at, done.weights["canary"]) == (at(960), 100)
    assert [r.run.step_started_at for r in results if r.events][:2] == [at(300), at(900)]


def test_a_finished_run_does_not_tick() -> None:
    spec = make_spec()
    for state in ("completed", "rolled_back"):
        run = in_state(state, spec)
        result = tick(run, spec, schedule_of(spec), failing(), at(3600))
        assert result == TickResult(run)


def test_a_step_without_pause_advances_at_the_next_tick() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"weight": 50}, {"weight": 100}])
    results = drive(started(spec), spec, [1, 2, 3], {})
    assert [(r.run.step, r.run.state) for r in results] == [
        (1, "progressing"),
        (2, "progressing"),
        (2, "completed"),
    ]


def test_min_requests_needs_a_pass_in_the_step_before_advancing() -> None:
    spec = make_spec(
        analysis={"min_requests": 100}, steps=[{"weight": 10, "pause": "2m"}, {"weight": 100}]
    )
    schedule = schedule_of(spec)
    run = started(spec)
    for offset in (60, 120, 180, 240):
        run = tick(run, spec, schedule, {"canary": sample(50, 0)}, at(offset)).run
    assert (run.step, run.step_passes) == (0, 0)
    run = tick(run, spec, schedule, healthy(), at(300)).run
    assert run.step == 1


def test_without_min_requests_a_step_advances_on_its_hold_alone() -> None:
    spec = make_spec(steps=[{"weight": 10, "pause": "2m"}, {"weight": 100}])
    results = drive(started(spec), spec, [60, 120], {})
    assert results[0].evaluation is not None and results[0].evaluation.verdict == "skip"
    assert results[1].run.step == 1


def test_a_failing_last_evaluation_holds_the_step() -> None:
    spec = make_spec(
        analysis={"max_failures": 5, "error_threshold": 0.05},
        steps=[{"weight": 10, "pause": "1m"}, {"weight": 100}],
    )
    schedule = schedule_of(spec)
    run = tick(started(spec), spec, schedule, failing(), at(60)).run
    run = tick(run, spec, schedule, failing(), at(90)).run
    assert (run.step, run.consecutive_failures) == (0, 1)
    run = tick(run, spec, schedule, healthy(), at(120)).run
    assert run.step == 1


def test_promote_sends_everything_to_the_canary() -> None:
    spec = make_spec()
    result = apply_action(in_state("progressing", spec), "promote", spec, schedule_of(spec), at(5))
    assert isinstance(result, TickResult)
    assert result.run.state == "completed"
    assert result.run.weights == {"stable": 0, "beta": 0, "canary": 100}
    assert result.weights_changed == result.run.weights
    assert result.run.finished_at == at(5)
    assert [e["type"] for e in result.events] == ["canary_completed"]
    assert result.events[0]["reason"] == "promoted by operator"


# --- rollback ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollback_to", "weights"),
    [
        ("original", {"stable": 60, "beta": 30, "canary": 10}),
        ("zero", {"stable": 66, "beta": 34, "canary": 0}),
    ],
)
def test_rollback_to(rollback_to: str, weights: dict[str, int]) -> None:
    spec = make_spec(analysis={"error_threshold": 0.05}, rollback_to=rollback_to)
    schedule = schedule_of(spec)
    assert rollback_weights(spec) == weights
    # automatic, from step 1 (canary 40)
    run = replace(started(spec), step=1, weights=schedule.steps[1].weights)
    auto = tick(run, spec, schedule, failing(), at(60))
    assert (auto.run.state, auto.run.weights, auto.weights_changed) == (
        "rolled_back",
        weights,
        weights,
    )
    assert auto.events[0]["weights"] == weights
    # manual, from progressing and from paused
    for state in ("progressing", "paused"):
        manual = apply_action(in_state(state, spec), "rollback", spec, schedule, at(9))
        assert isinstance(manual, TickResult)
        assert (manual.run.state, manual.run.weights) == ("rolled_back", weights)
        assert manual.run.reason == "rolled back by operator"
        assert manual.run.finished_at == at(9)


# --- progress deadline ---------------------------------------------------------------------


@pytest.mark.parametrize(("requests", "state"), [(99, "rolled_back"), (100, "progressing")])
def test_progress_deadline(requests: int, state: str) -> None:
    spec = make_spec(
        analysis={"min_requests": 100, "progress_deadline": "10m", "interval": "1h"},
        steps=[{"weight": 10, "pause": "1h"}, {"weight": 100}],
    )
    samples = {"canary": sample(requests, 0)}
    results = drive(started(spec), spec, [599, 600], samples)
    assert results[0].run.state == "progressing"
    assert results[1].run.state == state
    if state == "rolled_back":
        assert results[1].run.reason == (
            "progress_deadline 10m passed at step 1 with 99 of 100 required canary requests"
        )
        assert results[1].run.weights == ORIGINAL


def test_progress_deadline_restarts_with_each_step() -> None:
    spec = make_spec(
        analysis={"min_requests": 100, "progress_deadline": "10m", "interval": "1m"},
        steps=[{"weight": 10, "pause": "8m"}, {"weight": 100, "pause": "1h"}],
    )
    schedule = schedule_of(spec)
    run = started(spec)
    for minute in range(1, 9):
        run = tick(run, spec, schedule, healthy(), at(60 * minute)).run
    assert (run.step, run.step_started_at) == (1, at(480))
    # step 1 has seen nothing yet; its deadline is 10m after it started, not after the run did
    run = tick(run, spec, schedule, {"canary": sample(5, 0)}, at(1079)).run
    assert run.state == "progressing"
    run = tick(run, spec, schedule, {"canary": sample(5, 0)}, at(1080)).run
    assert run.state == "rolled_back"


def test_a_step_judged_on_enough_traffic_is_not_stopped_by_the_deadline() -> None:
    # The deadline is about reaching min_requests; once an evaluation of the step was judged,
    # a later thinner sample (e.g. from a sliding window) does not trip it.
    spec = make_spec(
        analysis={"min_requests": 100, "progress_deadline": "10m", "interval": "1m"},
        steps=[{"weight": 10, "pause": "1h"}, {"weight": 100}],
    )
    schedule = schedule_of(spec)
    run = tick(started(spec), spec, schedule, healthy(), at(60)).run
    assert run.step_judged == 1
    run = tick(run, spec, schedule, {"canary": sample(5, 0)}, at(900)).run
    assert run.state == "progressing"


# --- pause and resume ----------------------------------------------------------------------


def test_a_paused_run_neither_evaluates_nor_advances() -> None:
    spec = make_spec(analysis={"error_threshold": 0.05})
    run = act(started(spec), "pause", spec, schedule_of(spec), at(10))
    assert isinstance(run, RunState)
    results = drive(run, spec, [60, 600, 6000], failing())
    assert all(r == TickResult(run) for r in results)


def test_the_hold_continues_from_resume() -> None:
    # 5m hold: 2m progressing, paused for 10m, resumed; 3m more are needed.
    spec = make_spec(
        steps=[{"weight": 10, "pause": "5m"}, {"weight": 40, "pause": "10m"}, {"weight": 100}]
    )
    schedule = schedule_of(spec)
    run = act(started(spec), "pause", spec, schedule, at(120))
    assert isinstance(run, RunState) and run.paused_at == at(120)
    run = act(run, "resume", spec, schedule, at(720))
    assert isinstance(run, RunState)
    assert (run.state, run.paused_at, run.paused_seconds) == ("progressing", None, 600.0)
    assert run.step_started_at == T0  # the metrics window is not moved by a pause
    assert tick(run, spec, schedule, healthy(), at(899)).run.step == 0
    run = tick(run, spec, schedule, healthy(), at(900)).run
    assert (run.step, run.paused_seconds) == (1, 0.0)
    # the next step's hold is its own 10m, whatever the previous step spent paused
    assert tick(run, spec, schedule, healthy(), at(1499)).run.step == 1
    assert tick(run, spec, schedule, healthy(), at(1500)).run.step == 2


def test_pause_and_resume_notify() -> None:
    spec = make_spec()
    schedule = schedule_of(spec)
    paused = apply_action(started(spec), "pause", spec, schedule, at(1))
    assert isinstance(paused, TickResult)
    resumed = apply_action(paused.run, "resume", spec, schedule, at(2))
    assert isinstance(resumed, TickResult)
    assert [e["type"] for e in paused.events + resumed.events] == [
        "canary_paused",
        "canary_resumed",
    ]
    assert paused.weights_changed is None and resumed.weights_changed is None


# --- a gateway that refuses weights --------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "action", "waits"),
    [
        ("pending", "start", True),
        ("progressing", "promote", True),
        ("progressing", "rollback", False),
        ("paused", "rollback", False),
        ("progressing", "pause", False),
        ("paused", "resume", False),
    ],
)
def test_which_actions_wait_for_the_gateway(state: str, action: str, waits: bool) -> None:
    spec = make_spec()
    run = in_state(state, spec)
    result = apply_action(run, action, spec, schedule_of(spec), at(1))
    assert isinstance(result, TickResult)
    assert waits_for_gateway(run, result.run) is waits
    if waits:
        assert refused(run, result) == TickResult(run), "held: unchanged, no event"
    else:
        assert refused(run, result) == result, "stands"


def test_a_refused_step_holds_with_its_evaluation_counted() -> None:
    spec = make_spec(steps=[{"weight": 10, "pause": "1m"}, {"weight": 100}])
    run = started(spec)
    moved = tick(run, spec, schedule_of(spec), healthy(), at(60))
    assert moved.run.step == 1 and moved.evaluation is not None
    held = refused(run, moved)
    assert (held.run.state, held.run.step, held.run.weights) == ("progressing", 0, run.weights)
    assert (held.run.step_passes, held.run.last_evaluation_at) == (1, at(60))
    assert held.evaluation == moved.evaluation and not held.events


def test_completion_waits_for_the_gateway_and_a_rollback_does_not() -> None:
    spec = make_spec(
        analysis={"max_failures": 1, "error_threshold": 0.05},
        steps=[{"weight": 10, "pause": "1m"}],
    )
    run = started(spec)
    done = tick(run, spec, schedule_of(spec), healthy(), at(60))
    assert done.run.state == "completed" and done.weights_changed is None
    assert refused(run, done).run == replace(
        run, step_passes=1, step_judged=1, last_evaluation_at=at(60)
    )
    rolled = tick(run, spec, schedule_of(spec), failing(), at(60))
    assert rolled.run.state == "rolled_back"
    assert refused(run, rolled) == rolled


def test_a_held_run_looks_for_its_move_again_only_after_the_backoff() -> None:
    spec = make_spec(
        analysis={"interval": "5m"}, steps=[{"weight": 10, "pause": "1m"}, {"weight": 100}]
    )
    schedule = schedule_of(spec)
    run = started(spec)
    assert next_tick_at(run, spec, schedule, at(61)) == at(61), "the step may advance at once"
    assert next_tick_at(run, spec, schedule, at(61), held_until=at(65)) == at(65)
    assert next_tick_at(run, spec, schedule, at(10), held_until=at(65)) == at(65), "hold end"
    # The evaluation (which may roll back) keeps its time.
    assert next_tick_at(run, spec, schedule, at(61), held_until=at(900)) == at(300)
    pending = new_run("api", "run-1", spec)
    auto = make_spec(auto_start=True)
    assert next_tick_at(pending, auto, schedule, at(0), held_until=at(4)) == at(4)
