"""A config file of the gateway project (wudi/gateway), read as that project reads it.

Its `routes:` become Routes; `upstreams:` resolve the routes' `upstream` references; every
other top-level section (listeners, registry, admin, logging, ...) belongs to the gateway
process and is accepted without being read. Field names, defaults and rules follow the
project's `config/config.go`, `config/loader.go` and `config/validators.go`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from pydantic import Field, create_model

from schemas.base import Duration, Problem, Slug, StrictModel, nested, url_problem
from schemas.route import (
    Analysis,
    Backend,
    CanaryStep,
    feature_problems,
    not_a_group,
    step_problems,
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

# The top-level keys of the gateway's `config.Config`, in its order.
GATEWAY_SECTIONS: tuple[str, ...] = (
    "listeners", "registry", "authentication", "upstreams", "routes", "tcp_routes",
    "udp_routes", "logging", "admin", "tracing", "ip_filter", "rules", "traffic_shaping",
    "redis", "waf", "dns_resolver", "openapi", "webhooks", "health_check", "error_pages",
    "nonce", "csrf", "geo", "idempotency", "backend_signing", "transport",
    "request_decompression", "response_limit", "security_headers", "maintenance", "shutdown",
    "trusted_proxies", "bot_detection", "ai_crawl_control", "client_mtls", "https_redirect",
    "allowed_hosts", "token_revocation", "service_rate_limit", "spike_arrest",
    "debug_endpoint", "cdn_cache_headers", "edge_cache_rules", "retry_budgets",
    "inbound_signing", "ssrf_protection", "ip_blocklist", "load_shedding", "audit_log", "wasm",
    "tenants", "completion_header", "deprecation", "consumer_groups", "baggage", "secrets",
    "extensions", "cluster",
)  # fmt: skip
# What we read of a gateway file; the rest configures the gateway process itself.
READ_SECTIONS = frozenset({"routes", "upstreams"})


# Route fields that answer requests without backends (the gateway's validateRouteBasics).
_HANDLERS = frozenset(
    {"service", "versioning", "echo", "static", "sequential", "aggregate", "fastcgi",
     "graphql_federation", "ai"}
)  # fmt: skip


class GatewayBackend(StrictModel):
    """A backend as the gateway takes it: any URL scheme (grpc:// serves gRPC routes)."""

    url: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", description="e.g. http://10.0.0.5")
    weight: int = Field(default=0, ge=0, description="Share among the backends; 0 counts as 1.")
    health_check: HealthCheck | None = None

    def problems(self) -> Iterator[Problem]:
        scheme = self.url.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            yield (
                ("url",),
                f"not supported: backend scheme {scheme!r} (routes here are proxied over http "
                "or https only)",
            )
        elif problem := url_problem(self.url):
            yield (("url",), problem)

    def backend(self) -> Backend:
        """The Route's backend (the scheme was checked by `problems`)."""
        return Backend(url=self.url, weight=self.weight, health_check=self.health_check)


def backend_problems(
    prefix: tuple[str | int, ...], backends: list[GatewayBackend]
) -> Iterator[Problem]:
    """The problems of a backend list, under `prefix`."""
    for index, backend in enumerate(backends):
        yield from nested((*prefix, index), backend.problems())


class GatewayUpstream(StrictModel):
    """A named pool of backends that routes and traffic-split groups refer to."""

    backends: list[GatewayBackend] = Field(default_factory=list)
    service: dict[str, Any] | None = Field(
        default=None, description="Service-registry discovery, kept as written."
    )
    load_balancer: str | None = None
    consistent_hash: dict[str, Any] | None = None
    health_check: HealthCheck | None = None
    transport: dict[str, Any] | None = None


class GatewayTrafficGroup(StrictModel):
    """A traffic-split group: inline backends or a named upstream."""

    name: Slug
    weight: int = Field(ge=0, le=100, description="Percent of traffic; a split sums to 100.")
    backends: list[GatewayBackend] = Field(default_factory=list)
    upstream: str | None = Field(default=None, description="A key of the file's upstreams.")
    match_headers: dict[str, str] = Field(
        default_factory=dict, description="Requests with these headers go to this group."
    )


class GatewayCanary(StrictModel):
    """The gateway's canary block: nothing runs unless `enabled: true` is written."""

    enabled: bool = False
    canary_group: Slug | None = None
    auto_start: bool = False
    steps: list[CanaryStep] = Field(default_factory=list)
    analysis: Analysis = Field(default_factory=Analysis)
    rollback_to: str = Field(default="original", pattern=r"^(original|zero)$")


class GatewayRouteFields(StrictModel):
    """The route fields we model; `GatewayRoute` adds the gateway's others as opaque."""

    id: Slug
    path: str = Field(pattern=r"^/\S*$", description="Request path, starting with '/'.")
    path_prefix: bool = False
    methods: list[str] | None = None
    backends: list[GatewayBackend] = Field(default_factory=list)
    upstream: str | None = Field(default=None, description="A key of the file's upstreams.")
    traffic_split: list[GatewayTrafficGroup] = Field(default_factory=list)
    canary: GatewayCanary | None = None
    strip_prefix: bool | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0)
    auth: RouteAuth | None = None
    rate_limit: RateLimit | None = None
    sticky: Sticky | None = None
    blue_green: BlueGreen | None = None
    ab_test: ABTest | None = None
    cache: Cache | None = None
    circuit_breaker: CircuitBreaker | None = None
    transform: Transform | None = None

    def other_fields(self) -> dict[str, Any]:
        """The gateway's other route fields that were written, by name."""
        return {
            name: getattr(self, name)
            for name in OTHER_ROUTE_FIELDS
            if name in self.model_fields_set
        }

    def problems(self) -> Iterator[Problem]:
        groups: set[str] = set()
        for index, group in enumerate(self.traffic_split):
            where: tuple[str | int, ...] = ("traffic_split", index)
            if group.name in groups:
                yield ((*where, "name"), f"group {group.name!r} is listed twice")
            groups.add(group.name)
            if group.upstream is not None and group.backends:
                yield ((*where, "upstream"), "upstream and backends are mutually exclusive")
            if group.upstream is None and not group.backends:
                yield (where, "a group needs backends or an upstream")
            yield from backend_problems((*where, "backends"), group.backends)
        yield from backend_problems(("backends",), self.backends)
        total = sum(group.weight for group in self.traffic_split)
        if self.traffic_split and total != 100:
            yield (("traffic_split",), f"group weights sum to {total}; they must sum to 100")
        if self.upstream is not None and self.backends:
            yield (("upstream",), "upstream and backends are mutually exclusive")
        handlers = [
            name
            for name, value in self.other_fields().items()
            if name in _HANDLERS
            and value
            and not (isinstance(value, dict) and value.get("enabled") is False)
        ]
        if not (self.backends or self.upstream or self.traffic_split or handlers):
            yield (
                ("backends",),
                "the route has nothing to send requests to: add backends, an upstream or a "
                "traffic_split (the gateway refuses such a route too)",
            )
        yield from self._canary_problems(groups)
        yield from feature_problems(self, groups, self.canary is not None and self.canary.enabled)

    def _canary_problems(self, groups: set[str]) -> Iterator[Problem]:
        # The gateway checks a canary block only when it is enabled; so do we.
        canary = self.canary
        if canary is None or not canary.enabled:
            return
        if not self.traffic_split:
            yield (("canary",), "a canary needs a traffic_split on the route")
        if canary.canary_group is None:
            yield (("canary", "canary_group"), "required when the canary is enabled")
        elif self.traffic_split and canary.canary_group not in groups:
            yield not_a_group(canary.canary_group, groups)
        elif self.traffic_split and len(groups) < 2:
            yield (("traffic_split",), "a canary needs at least one group besides the canary")
        yield from step_problems(canary.steps)


# Each other field of the gateway's RouteConfig is accepted with any value, so a pasted route
# loads, while a key the gateway does not know is still an unknown-field error.
GatewayRoute = cast(
    type[GatewayRouteFields],
    create_model(  # type: ignore[call-overload]
        "GatewayRoute",
        __base__=GatewayRouteFields,
        __doc__="One entry of a gateway file's `routes:` list.",
        **{name: (Any, Field(default=None)) for name in OTHER_ROUTE_FIELDS},
    ),
)


class GatewayFile(StrictModel):
    """A gateway configuration file: `routes:` and `upstreams:` are read, the other
    sections of the gateway's config are accepted as written."""

    routes: list[GatewayRoute] = Field(default_factory=list)  # type: ignore[valid-type]
    upstreams: dict[str, GatewayUpstream] = Field(default_factory=dict)


GatewayFileModel = cast(
    type[GatewayFile],
    create_model(  # type: ignore[call-overload]
        "GatewayFile",
        __base__=GatewayFile,
        __doc__=GatewayFile.__doc__,
        **{
            name: (Any, Field(default=None))
            for name in GATEWAY_SECTIONS
            if name not in READ_SECTIONS
        },
    ),
)
