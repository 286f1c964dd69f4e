"""The Route kind: a traffic split over backend groups with canary-deployment steps."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from pydantic import Field

from schemas.base import (
    API_VERSION,
    Duration,
    Metadata,
    Problem,
    Slug,
    StrictModel,
    nested,
    url_problem,
)
from schemas.routefeatures import (
    OTHER_ROUTE_FIELDS,
    ABTest,
    BlueGreen,
    Cache,
    CircuitBreaker,
    HealthCheck,
    RateLimit,
    RouteAuth,
    Sticky,
    Transform,
)


class Backend(StrictModel):
    """One upstream server of a group."""

    url: str = Field(pattern=r"^https?://\S+$", description="e.g. http://10.0.0.5:8080")
    weight: int = Field(
        default=0, ge=0, description="Share among the group's backends; 0 counts as 1."
    )
    health_check: HealthCheck | None = Field(
        default=None, description="The gateway's active health check of this backend."
    )

    def problems(self) -> Iterator[Problem]:
        if problem := url_problem(self.url):
            yield (("url",), problem)


class TrafficGroup(StrictModel):
    """A named group of backends and the share of traffic it receives."""

    name: Slug
    weight: int = Field(ge=0, le=100, description="Percent of traffic; a split sums to 100.")
    backends: list[Backend] = Field(min_length=1)
    match_headers: dict[str, str] | None = Field(
        default=None, description="Requests with these headers go to this group (gateway)."
    )


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

    enabled: bool = Field(
        default=True,
        description="A Route document's canary runs unless disabled; in a gateway file it "
        "runs only when written as true, as the gateway project reads it.",
    )
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
    # The gateway project's route-level features (schemas/routefeatures.py). Our nginx data
    # plane reproduces none of them; the core decides which keep a route off it.
    methods: list[str] | None = Field(default=None, description="Allowed HTTP methods.")
    strip_prefix: bool | None = Field(default=None, description="Remove the path prefix.")
    timeout: Duration | None = Field(default=None, description="Whole-request timeout.")
    retries: int | None = Field(default=None, ge=0, description="Retries of a failed request.")
    auth: RouteAuth | None = None
    rate_limit: RateLimit | None = None
    sticky: Sticky | None = None
    blue_green: BlueGreen | None = None
    ab_test: ABTest | None = None
    cache: Cache | None = None
    circuit_breaker: CircuitBreaker | None = None
    transform: Transform | None = None
    gateway_fields: dict[str, Any] | None = Field(
        default=None,
        description="Other route fields of the gateway project, kept as written "
        "(retry_policy, cors, ip_filter, ...).",
    )

    def problems(self) -> Iterator[Problem]:
        if problem := path_problem(self.path):
            yield (("path",), problem)
        groups = self.traffic_split or []
        seen: set[str] = set()
        for index, group in enumerate(groups):
            if group.name in seen:
                yield (("traffic_split", index, "name"), f"group {group.name!r} is listed twice")
            seen.add(group.name)
            for number, backend in enumerate(group.backends):
                yield from nested(("traffic_split", index, "backends", number), backend.problems())
        total = sum(group.weight for group in groups)
        if groups and total != 100:
            yield (("traffic_split",), f"group weights sum to {total}; they must sum to 100")
        if self.canary is not None:
            yield from self._canary_problems(seen)
        yield from feature_problems(self, seen, self.canary is not None and self.canary.enabled)

    def _canary_problems(self, group_names: set[str]) -> Iterator[Problem]:
        assert self.canary is not None
        canary = self.canary
        if not self.traffic_split:
            yield (("canary",), "a canary needs a traffic_split on the route")
        elif canary.canary_group not in group_names:
            yield not_a_group(canary.canary_group, group_names)
        elif len(group_names) < 2:
            yield (("traffic_split",), "a canary needs at least one group besides the canary")
        yield from step_problems(canary.steps)


# Not in a route path: C0 controls and DEL (a client sends one only percent-encoded), and
# percent-encoding (nginx compares a location with the request path decoded).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def normal_path(path: str) -> str:
    """`path` as nginx normalises a request path before matching it: repeated slashes merged,
    `.` segments dropped, a `..` segment dropping the one before it."""
    segments: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    trailing = bool(segments) and path.rsplit("/", 1)[-1] in ("", ".", "..")
    return "/" + "/".join(segments) + ("/" if trailing else "")


def unreachable_on_nginx(path: str) -> str | None:
    """Why no request at all reaches `path` on nginx, or None: forms the gateway project
    still matches as written (its router compares the decoded request path without
    resolving `.`, `..` or `//`, and takes `%00`), so a gateway file may hold them.

    Args:
        path: a route's path.
    """
    if "\0" in path:
        return (
            "the path holds a NUL character (U+0000): nginx answers 400 to every request "
            "path with one (%00), so no request reaches this route; remove it"
        )
    normal = normal_path(path)
    if normal == path:
        return None
    segments = path.split("/")
    form = "a '..' segment" if ".." in segments else "a '.' segment" if "." in segments else "'//'"
    return (
        f"{form} in {path!r}: nginx resolves '.' and '..' segments and merges repeated "
        f"slashes in a request path before matching it, so no request reaches this path; "
        f"write {normal!r}"
    )


def path_problem(path: str) -> str | None:
    """Why a Route's `path` does not take, on nginx, the requests it names, or None.

    nginx matches a location against the request path percent-decoded, with `.` and `..`
    segments resolved and `//` merged: a path written encoded or unnormalised takes other
    requests than the ones it names, or none. A control character is refused outright: a
    client sends one only percent-encoded, and in YAML it is a stray escape (`"\\x1c"`).

    Args:
        path: a route's path (the field's pattern has already refused whitespace).
    """
    if problem := unreachable_on_nginx(path):
        return problem
    if control := _CONTROL.search(path):
        return (
            f"the path holds the control character U+{ord(control.group()):04X} (at index "
            f"{control.start()}), most likely from a YAML escape: a client sends one only "
            "percent-encoded, and a route path takes printable characters only; remove it"
        )
    if encoded := _PERCENT.search(path):
        matched = path.replace("%", "%25")
        return (
            f"{encoded.group()!r} is percent-encoding: nginx matches the decoded request path, "
            f"so this route would take only requests for {matched!r}, not {path!r}; "
            + _decoded_advice(path)
        )
    return None


def _decoded_advice(path: str) -> str:
    """What to write instead of the percent-encoded `path`."""
    try:
        decoded = normal_path(unquote_to_bytes(path).decode())
    except UnicodeDecodeError:
        return "decoded, it is not UTF-8 text, which no route path can hold"
    if _CONTROL.search(decoded):
        reason = "a control character"
    elif any(character.isspace() for character in decoded):
        reason = "whitespace"
    elif _PERCENT.search(decoded):
        reason = "percent-encoding again"
    else:
        return f"write the path decoded: {decoded!r}"
    return f"decoded, it reads {decoded!r}, which a route path cannot hold ({reason})"


def feature_problems(spec: RouteSpec | Any, groups: set[str], canary_on: bool) -> Iterator[Problem]:
    """The gateway project's rules for the route-level features, with their field paths.

    Args:
        spec: the route (a RouteSpec or a gateway route: both have the feature fields).
        groups: the names of its traffic-split groups.
        canary_on: whether the route has an enabled canary.
    """
    sticky, blue_green, ab_test = spec.sticky, spec.blue_green, spec.ab_test
    if sticky is not None and sticky.enabled:
        if sticky.mode is None:
            yield (("sticky", "mode"), "required when enabled: cookie, header or hash")
        if not groups:
            yield (("sticky",), "sticky needs a traffic_split on the route")
        if sticky.mode in ("header", "hash") and not sticky.hash_key:
            yield (("sticky", "hash_key"), f"required for mode {sticky.mode}")
    if blue_green is not None and blue_green.enabled:
        if canary_on:
            yield (("blue_green",), "blue_green and an enabled canary are mutually exclusive")
        if not groups:
            yield (("blue_green",), "blue_green needs a traffic_split on the route")
        for key in ("active_group", "inactive_group"):
            name = getattr(blue_green, key)
            if name is None:
                yield (("blue_green", key), "required when enabled")
            elif groups and name not in groups:
                yield (
                    ("blue_green", key),
                    f"{name!r} is not a traffic_split group (groups: {', '.join(sorted(groups))})",
                )
    if ab_test is not None and ab_test.enabled:
        if canary_on or (blue_green is not None and blue_green.enabled):
            yield (("ab_test",), "ab_test is mutually exclusive with canary and blue_green")
        if not groups:
            yield (("ab_test",), "ab_test needs a traffic_split on the route")
        if not ab_test.experiment_name:
            yield (("ab_test", "experiment_name"), "required when enabled")
    if spec.rate_limit is not None:
        yield from nested(("rate_limit",), spec.rate_limit.problems())
    for key in getattr(spec, "gateway_fields", None) or {}:
        if key not in OTHER_ROUTE_FIELDS:
            yield (("gateway_fields", key), f"{key!r} is not a route field of the gateway project")


class RouteDocument(StrictModel):
    """A `kind: Route` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Route"] = "Route"
    metadata: Metadata
    spec: RouteSpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)


def not_a_group(canary_group: str, group_names: set[str]) -> Problem:
    """A canary_group that names no traffic_split group."""
    return (
        ("canary", "canary_group"),
        f"{canary_group!r} is not a traffic_split group (groups: {', '.join(sorted(group_names))})",
    )


def step_problems(steps: Sequence[CanaryStep]) -> Iterator[Problem]:
    """A canary's steps: at least one, weights never decreasing."""
    if not steps:
        yield (("canary", "steps"), "at least one step is required")
    previous = 0
    for index, step in enumerate(steps):
        if step.weight < previous:
            yield (
                ("canary", "steps", index, "weight"),
                f"step weights must not decrease ({previous} then {step.weight})",
            )
        previous = max(previous, step.weight)
