"""The Route kind: a traffic split over backend groups with canary-deployment steps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from schemas.base import API_VERSION, Duration, Metadata, Problem, Slug, StrictModel


class Backend(StrictModel):
    """One upstream server of a group."""

    url: str = Field(pattern=r"^https?://\S+$", description="e.g. http://10.0.0.5:8080")


class TrafficGroup(StrictModel):
    """A named group of backends and the share of traffic it receives."""

    name: Slug
    weight: int = Field(ge=0, le=100, description="Percent of traffic; a split sums to 100.")
    backends: list[Backend] = Field(min_length=1)


class CanaryStep(StrictModel):
    """A step: send `weight` percent to the canary group and hold for `pause`."""

    weight: int = Field(ge=0, le=100)
    pause: Duration | None = Field(default=None, description="Hold before the next step.")


class Analysis(StrictModel):
    """Health thresholds evaluated every `interval` while a canary progresses."""

    error_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="An evaluation fails above this error rate (0.0-1.0).",
    )
    latency_threshold: Duration | None = Field(
        default=None, description="An evaluation fails when the canary's p99 exceeds this."
    )
    max_error_rate_increase: float = Field(
        default=0.0, ge=0.0, description="Max canary/baseline error-rate ratio; 0 disables."
    )
    max_latency_increase: float = Field(
        default=0.0, ge=0.0, description="Max canary/baseline p99 ratio; 0 disables."
    )
    max_error_rate_delta: float | None = Field(
        default=None,
        ge=0.0,
        le=100.0,
        description="Max canary minus baseline error rate, in percentage points; "
        "covers a baseline with zero errors, which the ratio check skips.",
    )
    max_failures: int = Field(
        default=0, ge=0, description="Consecutive failing evaluations before rollback."
    )
    min_requests: int = Field(default=0, ge=0, description="Skip evaluation below this count.")
    interval: Duration = Field(default="30s", description="How often to evaluate.")
    progress_deadline: Duration | None = Field(
        default=None, description="Roll back a step that has not seen min_requests by then."
    )


class CanaryDeployment(StrictModel):
    """How a route's canary group is stepped up, analysed and rolled back."""

    enabled: bool = True
    canary_group: Slug
    auto_start: bool = Field(default=False, description="Start the run without a manual start.")
    steps: list[CanaryStep] = Field(default_factory=list)
    analysis: Analysis = Field(default_factory=Analysis)
    rollback_to: Literal["original", "zero"] = Field(
        default="original",
        description="On rollback restore the original weights, or send the canary nothing.",
    )


class RouteSpec(StrictModel):
    """A route: which requests it matches and how they are split."""

    path: str = Field(pattern=r"^/\S*$", description="Request path, starting with '/'.")
    path_prefix: bool = Field(default=False, description="Match every path under `path`.")
    traffic_split: list[TrafficGroup] | None = None
    canary: CanaryDeployment | None = None

    def problems(self) -> Iterator[Problem]:
        groups = self.traffic_split or []
        seen: set[str] = set()
        for index, group in enumerate(groups):
            if group.name in seen:
                yield (("traffic_split", index, "name"), f"group {group.name!r} is listed twice")
            seen.add(group.name)
        total = sum(group.weight for group in groups)
        if groups and total != 100:
            yield (("traffic_split",), f"group weights sum to {total}; they must sum to 100")
        if self.canary is not None:
            yield from self._canary_problems(seen)

    def _canary_problems(self, group_names: set[str]) -> Iterator[Problem]:
        assert self.canary is not None
        canary = self.canary
        if not self.traffic_split:
            yield (("canary",), "a canary needs a traffic_split on the route")
        elif canary.canary_group not in group_names:
            yield (
                ("canary", "canary_group"),
                f"{canary.canary_group!r} is not a traffic_split group "
                f"(groups: {', '.join(sorted(group_names))})",
            )
        elif len(group_names) < 2:
            yield (("traffic_split",), "a canary needs at least one group besides the canary")
        if not canary.steps:
            yield (("canary", "steps"), "at least one step is required")
        previous = 0
        for index, step in enumerate(canary.steps):
            if step.weight < previous:
                yield (
                    ("canary", "steps", index, "weight"),
                    f"step weights must not decrease ({previous} then {step.weight})",
                )
            previous = max(previous, step.weight)


class RouteDocument(StrictModel):
    """A `kind: Route` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Route"] = "Route"
    metadata: Metadata
    spec: RouteSpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)


class GatewayRoute(RouteSpec):
    """One entry of a gateway file's top-level `routes:` list."""

    id: Slug


class GatewayFile(StrictModel):
    """A gateway configuration file: a top-level `routes:` list."""

    routes: list[GatewayRoute]
