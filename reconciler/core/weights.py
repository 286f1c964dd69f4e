"""Weight redistribution for canary steps and a route's full step schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.durations import parse_duration
from schemas.route import RouteSpec


def redistribute(
    groups: Sequence[tuple[str, int]], canary_group: str, canary_weight: int
) -> dict[str, int]:
    """Give the canary group `canary_weight` and share the rest by the original ratios.

    Each non-canary group gets floor(remaining x its weight / non-canary total); the last
    non-canary group in declaration order takes what rounding left, so weights sum to 100.
    When every non-canary group started at 0 the last one takes all that remains.

    Args:
        groups: (name, original weight) in declaration order.
        canary_group: the name of the canary group.
        canary_weight: the canary's target weight, 0-100.

    Returns:
        Group name to weight, in declaration order.
    """
    remaining = 100 - canary_weight
    others = [(name, weight) for name, weight in groups if name != canary_group]
    total = sum(weight for _, weight in others)
    weights: dict[str, int] = {}
    given = 0
    for index, (name, weight) in enumerate(others):
        if index == len(others) - 1:
            share = remaining - given
        else:
            share = remaining * weight // total if total else 0
        weights[name] = share
        given += share
    return {name: canary_weight if name == canary_group else weights[name] for name, _ in groups}


@dataclass(frozen=True)
class Step:
    """One step of a canary run: target canary weight, every group's weight, the hold."""

    weight: int
    pause: str | None
    weights: dict[str, int]


@dataclass(frozen=True)
class StepSchedule:
    """The full schedule a canary run goes through, and the least time it can take."""

    route: str
    canary_group: str
    steps: tuple[Step, ...]
    min_duration_seconds: float


def step_schedule(route: str, spec: RouteSpec) -> StepSchedule | None:
    """The step schedule of a route's canary, or None when it has no enabled canary."""
    if spec.canary is None or not spec.canary.enabled or not spec.traffic_split:
        return None
    groups = [(group.name, group.weight) for group in spec.traffic_split]
    canary = spec.canary
    steps = tuple(
        Step(step.weight, step.pause, redistribute(groups, canary.canary_group, step.weight))
        for step in canary.steps
    )
    total = sum(parse_duration(step.pause) for step in canary.steps if step.pause)
    return StepSchedule(route, canary.canary_group, steps, total)
