"""Canary analysis: judge the canary group's metrics against the route's thresholds.

Pure: no I/O and no clock; the evaluation time is passed in. The rules, in order:

1. No data: with no canary requests, or fewer than ``min_requests``, the verdict is ``skip``.
   A skipped evaluation neither passes nor fails.
2. Absolute: the canary's error rate above ``error_threshold`` fails; its p99 above
   ``latency_threshold`` fails.
3. Comparative, against the baseline group (see :func:`baseline_group`), only when the baseline
   served requests in the same window:
   - ``max_error_rate_increase`` (0 disables): canary rate / baseline rate above it fails; skipped
     when the baseline has no errors (division guard).
   - ``max_latency_increase`` (0 disables): canary p99 / baseline p99 above it fails; skipped when
     the baseline has no p99 or a zero p99.
   - ``max_error_rate_delta`` (unset disables), additive in percentage points: canary rate x 100
     minus baseline rate x 100 above it fails. It is checked whenever set, so it also catches a
     canary that errors while the baseline has none, which the ratio check skips.

Every limit is exclusive: a value equal to its limit passes. Rates are compared exactly
(as fractions), so a boundary is never crossed by floating-point rounding. Every failing rule is
named in the reason, in rule order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Literal

from schemas.durations import parse_duration
from schemas.route import CanaryDeployment, RouteSpec

Verdict = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class GroupSample:
    """Metrics of one traffic group since the current step started."""

    requests: int
    errors: int
    p99_ms: float | None = None

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0:
            raise ValueError("requests and errors must be >= 0")
        if self.errors > self.requests:
            raise ValueError(f"{self.errors} errors out of {self.requests} requests")

    @property
    def error_rate(self) -> float | None:
        """Errors / requests, or None with no requests."""
        return self.errors / self.requests if self.requests else None


NO_SAMPLES = GroupSample(0, 0, None)


@dataclass(frozen=True)
class Thresholds:
    """The limits an evaluation used, as configured (latency in milliseconds)."""

    error_threshold: float | None
    latency_threshold_ms: float | None
    max_error_rate_increase: float
    max_latency_increase: float
    max_error_rate_delta: float | None
    min_requests: int

    @classmethod
    def of(cls, canary: CanaryDeployment) -> Thresholds:
        analysis = canary.analysis
        latency = analysis.latency_threshold
        return cls(
            error_threshold=analysis.error_threshold,
            latency_threshold_ms=parse_duration(latency) * 1000 if latency else None,
            max_error_rate_increase=analysis.max_error_rate_increase,
            max_latency_increase=analysis.max_latency_increase,
            max_error_rate_delta=analysis.max_error_rate_delta,
            min_requests=analysis.min_requests,
        )


@dataclass(frozen=True)
class Evaluation:
    """One recorded analysis: the values, the limits, the verdict and why."""

    at: datetime
    step: int
    verdict: Verdict
    reason: str
    failed_rules: tuple[str, ...]
    canary_group: str
    baseline_group: str
    canary_requests: int
    canary_errors: int
    canary_error_rate: float | None
    canary_p99_ms: float | None
    baseline_requests: int
    baseline_errors: int
    baseline_error_rate: float | None
    baseline_p99_ms: float | None
    error_rate_ratio: float | None
    latency_ratio: float | None
    error_rate_delta_pp: float | None
    thresholds: Thresholds


def baseline_group(groups: Sequence[tuple[str, int]], canary_group: str) -> str:
    """The baseline: the non-canary group with the highest ORIGINAL weight, ties alphabetical.

    Args:
        groups: (name, original weight) as configured on the route.
        canary_group: the canary group's name, never chosen.

    Raises:
        ValueError: when there is no group besides the canary.
    """
    others = [(name, weight) for name, weight in groups if name != canary_group]
    if not others:
        raise ValueError(f"no traffic group besides the canary {canary_group!r}")
    return min(others, key=lambda item: (-item[1], item[0]))[0]


def route_groups(spec: RouteSpec) -> list[tuple[str, int]]:
    """A route's (group name, original weight) pairs in declaration order."""
    return [(group.name, group.weight) for group in spec.traffic_split or []]


def evaluate(
    spec: RouteSpec,
    samples: Mapping[str, GroupSample],
    baseline: str,
    at: datetime,
    *,
    step: int = -1,
) -> Evaluation:
    """Judge the canary's samples by every analysis rule (see the module docstring).

    A group missing from `samples` counts as having served nothing.

    Raises:
        ValueError: when the route has no canary.
    """
    if spec.canary is None:
        raise ValueError("the route has no canary")
    limits = Thresholds.of(spec.canary)
    canary = samples.get(spec.canary.canary_group, NO_SAMPLES)
    base = samples.get(baseline, NO_SAMPLES)
    verdict, reason, failed = _judge(canary, base, baseline, limits)
    return Evaluation(
        at=at,
        step=step,
        verdict=verdict,
        reason=reason,
        failed_rules=failed,
        canary_group=spec.canary.canary_group,
        baseline_group=baseline,
        canary_requests=canary.requests,
        canary_errors=canary.errors,
        canary_error_rate=canary.error_rate,
        canary_p99_ms=canary.p99_ms,
        baseline_requests=base.requests,
        baseline_errors=base.errors,
        baseline_error_rate=base.error_rate,
        baseline_p99_ms=base.p99_ms,
        error_rate_ratio=_error_ratio(canary, base),
        latency_ratio=_latency_ratio(canary, base),
        error_rate_delta_pp=_delta_pp(canary, base),
        thresholds=limits,
    )


def _judge(
    canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds
) -> tuple[Verdict, str, tuple[str, ...]]:
    """The verdict, its reason and the failing rules' names."""
    if canary.requests == 0:
        return "skip", "no canary requests yet", ()
    if canary.requests < limits.min_requests:
        return (
            "skip",
            f"min_requests: {canary.requests} canary requests < {limits.min_requests} required",
            (),
        )
    failures = _absolute_failures(canary, limits) + _comparative_failures(
        canary, base, baseline, limits
    )
    if failures:
        return "fail", "; ".join(msg for _, msg in failures), tuple(rule for rule, _ in failures)
    return "pass", _pass_reason(canary, base, baseline, limits), ()


def _absolute_failures(canary: GroupSample, limits: Thresholds) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    rate = Fraction(canary.errors, canary.requests)
    if limits.error_threshold is not None and rate > _exact(limits.error_threshold):
        failures.append(
            (
                "error_threshold",
                f"error_threshold: canary error rate {_pct(canary)} "
                f"> {limits.error_threshold * 100:.2f}%",
            )
        )
    p99, limit_ms = canary.p99_ms, limits.latency_threshold_ms
    if p99 is not None and limit_ms is not None and _exact(p99) > _exact(limit_ms):
        failures.append(
            ("latency_threshold", f"latency_threshold: canary p99 {p99:g}ms > {limit_ms:g}ms")
        )
    return failures


def _comparative_failures(
    canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds
) -> list[tuple[str, str]]:
    if base.requests == 0:
        return []
    checks = (
        ("max_error_rate_increase", _error_ratio_failure),
        ("max_latency_increase", _latency_ratio_failure),
        ("max_error_rate_delta", _error_delta_failure),
    )
    failures: list[tuple[str, str]] = []
    for rule, check in checks:
        message = check(canary, base, baseline, limits)
        if message is not None:
            failures.append((rule, f"{rule}: {message}"))
    return failures


def _error_ratio_failure(
    canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds
) -> str | None:
    """Canary rate / baseline rate above the limit; skipped with a zero-error baseline."""
    increase = limits.max_error_rate_increase
    if increase <= 0 or base.errors == 0:
        return None
    ratio = Fraction(canary.errors, canary.requests) / Fraction(base.errors, base.requests)
    if ratio <= _exact(increase):
        return None
    return (
        f"canary error rate {_pct(canary)} is {float(ratio):.2f}x "
        f"baseline {baseline} {_pct(base)} > {increase:g}x"
    )


def _latency_ratio_failure(
    canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds
) -> str | None:
    """Canary p99 / baseline p99 above the limit; skipped without a non-zero baseline p99."""
    increase = limits.max_latency_increase
    if increase <= 0 or canary.p99_ms is None or not base.p99_ms:
        return None
    if _exact(canary.p99_ms) <= _exact(increase) * _exact(base.p99_ms):
        return None
    return (
        f"canary p99 {canary.p99_ms:g}ms is {canary.p99_ms / base.p99_ms:.2f}x "
        f"baseline {baseline} {base.p99_ms:g}ms > {increase:g}x"
    )


def _error_delta_failure(
    canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds
) -> str | None:
    """Canary rate minus baseline rate, in percentage points, above the limit."""
    delta = limits.max_error_rate_delta
    if delta is None:
        return None
    points = (Fraction(canary.errors, canary.requests) - Fraction(base.errors, base.requests)) * 100
    if points <= _exact(delta):
        return None
    return (
        f"canary error rate {_pct(canary)} is {float(points):.2f} points above "
        f"baseline {baseline} {_pct(base)} > {delta:g} points"
    )


def _pass_reason(canary: GroupSample, base: GroupSample, baseline: str, limits: Thresholds) -> str:
    p99 = f", p99 {canary.p99_ms:g}ms" if canary.p99_ms is not None else ""
    reason = f"healthy: canary error rate {_pct(canary)}{p99}"
    notes: list[str] = []
    if base.requests == 0:
        notes.append(f"comparative checks skipped: baseline {baseline} served no requests")
    else:
        reason += f"; baseline {baseline} {_pct(base)}"
        reason += f", p99 {base.p99_ms:g}ms" if base.p99_ms is not None else ""
        if limits.max_error_rate_increase > 0 and base.errors == 0:
            notes.append(f"error-rate ratio skipped: baseline {baseline} has no errors")
        if limits.max_latency_increase > 0 and not base.p99_ms and canary.p99_ms is not None:
            notes.append(f"latency ratio skipped: baseline {baseline} has no latency")
    return "; ".join([reason, *notes])


def _error_ratio(canary: GroupSample, base: GroupSample) -> float | None:
    if not canary.requests or not base.requests or not base.errors:
        return None
    return float(Fraction(canary.errors, canary.requests) / Fraction(base.errors, base.requests))


def _latency_ratio(canary: GroupSample, base: GroupSample) -> float | None:
    if canary.p99_ms is None or not base.p99_ms:
        return None
    return canary.p99_ms / base.p99_ms


def _delta_pp(canary: GroupSample, base: GroupSample) -> float | None:
    if not canary.requests or not base.requests:
        return None
    diff = Fraction(canary.errors, canary.requests) - Fraction(base.errors, base.requests)
    return float(diff * 100)


def _exact(value: float) -> Fraction:
    """A float as the decimal it was written as (0.05 -> 1/20), for exact comparisons."""
    return Fraction(str(value))


def _pct(sample: GroupSample) -> str:
    rate = sample.error_rate or 0.0
    return f"{rate * 100:.2f}% ({sample.errors}/{sample.requests})"
