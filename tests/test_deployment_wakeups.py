"""When the canary controller must wake (pure): `next_tick_at` never lets a tick that would
do something go by, so a controller that sleeps until then behaves as one ticking every
second."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from reconciler.core.deployment import GroupSample, RunState, new_run, next_tick_at, tick
from tests.test_deployment import at, make_spec, schedule_of

VARIANTS: list[dict[str, Any]] = [
    {"analysis": {"interval": "1m", "min_requests": 50, "max_failures": 2}},
    {"analysis": {"interval": "30s", "progress_deadline": "3m", "min_requests": 100}},
    {"analysis": {"interval": "0s", "max_failures": 3}},
    {
        "analysis": {"interval": "45s", "progress_deadline": "2m"},
        "steps": [{"weight": 10}, {"weight": 50, "pause": "90s"}, {"weight": 100}],
    },
]


class Traffic:
    """What a step served so far: sometimes nothing, sometimes failing, sometimes healthy.

    The controller reads metrics from the step's start, so within a step the canary's
    request count never goes down.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.step = -1
        self.canary = 0

    def __call__(self, run: RunState) -> dict[str, GroupSample]:
        if run.step != self.step:
            self.step, self.canary = run.step, 0
        self.canary += self.rng.choice([0, 0, 10, 60, 500])
        return samples(self.canary, self.rng.choice([0, 0, self.canary // 2]))


def samples(canary: int, errors: int) -> dict[str, GroupSample]:
    """The canary's requests and errors beside a healthy baseline."""
    return {
        "canary": GroupSample(canary, errors, 100.0),
        "stable": GroupSample(5000, 5, 100.0),
        "beta": GroupSample(2000, 2, 100.0),
    }


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("seed", range(25))
def test_a_tick_before_next_tick_at_changes_nothing(variant: int, seed: int) -> None:
    rng = random.Random(seed)
    traffic = Traffic(seed)
    spec = make_spec(auto_start=True, **VARIANTS[variant])
    schedule = schedule_of(spec)
    run: RunState = new_run("api", "api#1", spec)
    last = at(0)
    assert next_tick_at(run, spec, schedule, last) == last, "auto_start: at once"
    run = tick(run, spec, schedule, traffic(run), last).run
    for _ in range(60):
        due = next_tick_at(run, spec, schedule, last)
        if due is None:
            assert run.state in ("completed", "rolled_back")
            return
        assert due >= last
        if due > last:
            # Anywhere strictly between the last tick and `due`: nothing happens.
            quiet = last + (due - last) * rng.uniform(0.01, 0.999)
            if quiet < due:
                result = tick(run, spec, schedule, traffic(run), quiet)
                assert (result.run, result.evaluation, result.events) == (run, None, [])
        # Ticked at `due` or a little late, as a sleeping controller is.
        last = max(due, last) + timedelta(seconds=rng.choice([0, 0, 0.3, 1]))
        run = tick(run, spec, schedule, traffic(run), last).run
    assert run.state in ("progressing", "completed", "rolled_back")


def test_only_an_action_moves_a_pending_paused_or_finished_run() -> None:
    spec = make_spec()  # no auto_start
    schedule = schedule_of(spec)
    pending = new_run("api", "api#1", spec)
    assert next_tick_at(pending, spec, schedule, at(0)) is None
    for state in ("paused", "completed", "rolled_back"):
        run = replace(pending, state=state, step=0, step_started_at=at(0))
        assert next_tick_at(run, spec, schedule, at(0)) is None


def test_a_paused_stretch_moves_the_hold_and_the_deadline() -> None:
    spec = make_spec(analysis={"interval": "10m", "progress_deadline": "4m"})
    schedule = schedule_of(spec)  # step 1 holds 5m
    run = replace(
        new_run("api", "api#1", spec),
        state="progressing",
        step=0,
        step_started_at=at(0),
        paused_seconds=120.0,
    )
    # Deadline 4m + 2m paused, before the hold's 5m + 2m and the evaluation at 10m.
    assert next_tick_at(run, spec, schedule, at(60)) == at(360)
    # Once judged, the deadline no longer applies: the hold ends first.
    judged = replace(run, step_judged=1)
    assert next_tick_at(judged, spec, schedule, at(60)) == at(420)
