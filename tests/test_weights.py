"""Weight redistribution and step schedules."""

from __future__ import annotations

import pytest

from reconciler.core.weights import redistribute, step_schedule
from schemas.route import RouteSpec


def test_seed_example_60_30_10_with_canary_at_40() -> None:
    groups = [("stable", 60), ("beta", 30), ("canary", 10)]
    assert redistribute(groups, "canary", 40) == {"stable": 40, "beta": 20, "canary": 40}


def test_rounding_remainder_goes_to_the_last_non_canary_group() -> None:
    # 90 x 33/100 = 29.7 -> 29 twice; the last non-canary group takes 90 - 58 = 32.
    groups = [("a", 33), ("b", 33), ("canary", 0), ("c", 34)]
    weights = redistribute(groups, "canary", 10)
    assert weights == {"a": 29, "b": 29, "canary": 10, "c": 32}
    assert sum(weights.values()) == 100


def test_last_in_declaration_order_even_when_canary_is_last() -> None:
    groups = [("blue", 50), ("green", 25), ("red", 25), ("canary", 0)]
    assert redistribute(groups, "canary", 3) == {"blue": 48, "green": 24, "red": 25, "canary": 3}


def test_two_group_split() -> None:
    groups = [("stable", 95), ("canary", 5)]
    assert redistribute(groups, "canary", 25) == {"stable": 75, "canary": 25}
    assert redistribute(groups, "canary", 100) == {"stable": 0, "canary": 100}
    assert redistribute(groups, "canary", 0) == {"stable": 100, "canary": 0}


@pytest.mark.parametrize("canary_weight", range(0, 101, 7))
def test_weights_always_sum_to_100(canary_weight: int) -> None:
    groups = [("a", 17), ("b", 41), ("c", 29), ("canary", 13)]
    assert sum(redistribute(groups, "canary", canary_weight).values()) == 100


def test_step_schedule_has_every_group_weight_and_minimum_duration() -> None:
    spec = RouteSpec.model_validate(
        {
            "path": "/api",
            "traffic_split": [
                {"name": "stable", "weight": 60, "backends": [{"url": "http://a:1"}]},
                {"name": "beta", "weight": 30, "backends": [{"url": "http://b:1"}]},
                {"name": "canary", "weight": 10, "backends": [{"url": "http://c:1"}]},
            ],
            "canary": {
                "canary_group": "canary",
                "steps": [
                    {"weight": 10, "pause": "5m"},
                    {"weight": 40, "pause": "1h30m"},
                    {"weight": 100},
                ],
            },
        }
    )
    schedule = step_schedule("api", spec)
    assert schedule is not None
    assert [step.weights for step in schedule.steps] == [
        {"stable": 60, "beta": 30, "canary": 10},
        {"stable": 40, "beta": 20, "canary": 40},
        {"stable": 0, "beta": 0, "canary": 100},
    ]
    assert schedule.min_duration_seconds == 5 * 60 + 90 * 60
