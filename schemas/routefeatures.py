"""Route-level features of the gateway project (wudi/gateway), field for field as its
`config.RouteConfig` defines them: authentication, rate limits, sticky groups, blue-green,
A/B tests, caching, circuit breaking, timeouts, retries and header transforms.

A Route carries them so the plan shows them and the core can decide whether our nginx data
plane may serve the route: it reproduces none of them, and a route whose protection it cannot
reproduce is never put on nginx without it (`reconciler/core/drive.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from schemas.base import Duration, Problem, StrictModel

# Every other field of the gateway's `RouteConfig` (config/config.go), in its order. They are
# accepted as written and kept in `gateway_fields`; an unknown key is still an error.
OTHER_ROUTE_FIELDS: tuple[str, ...] = (
    "match",
    "service",
    "retry_policy",
    "timeout_policy",
    "websocket",
    "max_body_size",
    "ip_filter",
    "cors",
    "compression",
    "validation",
    "mirror",
    "grpc",
    "rules",
    "protocol",
    "traffic_shaping",
    "waf",
    "load_balancer",
    "consistent_hash",
    "graphql",
    "graphql_federation",
    "coalesce",
    "ext_auth",
    "versioning",
    "access_log",
    "openapi",
    "error_pages",
    "nonce",
    "csrf",
    "idempotency",
    "outlier_detection",
    "geo",
    "backend_signing",
    "request_decompression",
    "response_limit",
    "security_headers",
    "maintenance",
    "rewrite",
    "bot_detection",
    "ai_crawl_control",
    "client_mtls",
    "proxy_rate_limit",
    "mock_response",
    "claims_propagation",
    "backend_auth",
    "status_mapping",
    "static",
    "passthrough",
    "echo",
    "spike_arrest",
    "content_replacer",
    "follow_redirects",
    "body_generator",
    "sequential",
    "quota",
    "aggregate",
    "response_body_generator",
    "param_forwarding",
    "content_negotiation",
    "cdn_cache_headers",
    "edge_cache_rules",
    "backend_encoding",
    "sse",
    "inbound_signing",
    "pii_redaction",
    "field_encryption",
    "fastcgi",
    "request_dedup",
    "ip_blocklist",
    "baggage",
    "backpressure",
    "audit_log",
    "modifiers",
    "field_replacer",
    "jmespath",
    "backend_response",
    "output_encoding",
    "error_handling",
    "lua",
    "wasm_plugins",
    "lambda",
    "amqp",
    "pubsub",
    "tenant",
    "tenant_backends",
    "completion_header",
    "session_affinity",
    "traffic_replay",
    "token_exchange",
    "deprecation",
    "slo",
    "etag",
    "streaming",
    "response_signing",
    "opa",
    "request_cost",
    "connect",
    "ai",
    "extensions",
)


class HealthCheck(StrictModel):
    """An active health check of one backend (the gateway's defaults apply when unset)."""

    path: str | None = Field(default=None, description="Default /health.")
    method: str | None = Field(default=None, description="Default GET.")
    interval: Duration | None = Field(default=None, description="Default 10s.")
    timeout: Duration | None = Field(default=None, description="Default 5s.")
    healthy_after: int | None = Field(default=None, ge=0, description="Default 2.")
    unhealthy_after: int | None = Field(default=None, ge=0, description="Default 3.")
    expected_status: list[str] = Field(
        default_factory=list, description="e.g. ['200', '2xx', '200-299']; default 200-399."
    )


class RouteAuth(StrictModel):
    """Whether a request must authenticate, and with which of the gateway's methods."""

    required: bool = False
    methods: list[str] = Field(default_factory=list, description="jwt, api_key, oauth, ...")


class RateLimitTier(StrictModel):
    """One tier of a tiered rate limit."""

    rate: int = Field(default=0, ge=0)
    period: Duration | None = None
    burst: int = Field(default=0, ge=0)


class RateLimit(StrictModel):
    """A per-route request rate limit; active when `enabled`, `rate` > 0 or tiers are set
    (as the gateway's route setup decides)."""

    enabled: bool = False
    rate: int = Field(default=0, ge=0)
    period: Duration | None = None
    burst: int = Field(default=0, ge=0)
    per_ip: bool = False
    key: str | None = Field(
        default=None,
        pattern=r"^(ip|client_id|(header|cookie|jwt_claim):.+)$",
        description="ip, client_id, header:<name>, cookie:<name> or jwt_claim:<name>.",
    )
    mode: Literal["local", "distributed"] | None = None
    algorithm: Literal["token_bucket", "sliding_window"] | None = None
    tiers: dict[str, RateLimitTier] = Field(default_factory=dict)
    tier_key: str | None = None
    default_tier: str | None = None

    @property
    def active(self) -> bool:
        return self.enabled or self.rate > 0 or bool(self.tiers)

    def problems(self) -> Iterator[Problem]:
        if self.key is not None and self.per_ip:
            yield (("key",), "key and per_ip are mutually exclusive")
        if self.algorithm == "sliding_window" and self.mode == "distributed":
            yield (("algorithm",), "sliding_window cannot be combined with mode distributed")


class Sticky(StrictModel):
    """Keep a client on the traffic-split group it was first sent to."""

    enabled: bool = False
    mode: Literal["cookie", "header", "hash"] | None = None
    cookie_name: str | None = Field(default=None, description="Default X-Traffic-Group.")
    hash_key: str | None = Field(default=None, description="Header for header/hash mode.")
    ttl: Duration | None = Field(default=None, description="Cookie lifetime, default 24h.")


class HealthGate(StrictModel):
    """What the inactive group must show before a blue-green switch."""

    min_healthy: int = Field(default=0, ge=0)
    timeout: Duration | None = None


class BlueGreen(StrictModel):
    """The gateway's blue-green deployment between two traffic-split groups."""

    enabled: bool = False
    active_group: str | None = None
    inactive_group: str | None = None
    health_gate: HealthGate | None = None
    auto_promote_delay: Duration | None = None
    rollback_on_error: bool = False
    error_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    observation_window: Duration | None = None
    min_requests: int = Field(default=0, ge=0)


class ABTest(StrictModel):
    """An A/B test: per-group metrics collected under an experiment name."""

    enabled: bool = False
    experiment_name: str | None = None


class Cache(StrictModel):
    """The gateway's response cache for the route."""

    enabled: bool = False
    ttl: Duration | None = None
    max_size: int = Field(default=0, ge=0)
    max_body_size: int = Field(default=0, ge=0)
    key_headers: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    mode: Literal["local", "distributed"] | None = None
    conditional: bool = False
    bucket: str | None = None
    stale_while_revalidate: Duration | None = None
    stale_if_error: Duration | None = None
    tag_headers: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class CircuitBreaker(StrictModel):
    """Stop sending to a failing route until it recovers."""

    enabled: bool = False
    failure_threshold: int = Field(default=0, ge=0)
    max_requests: int = Field(default=0, ge=0)
    timeout: Duration | None = None
    mode: Literal["local", "distributed"] | None = None
    tenant_isolation: bool = False


class HeaderTransform(StrictModel):
    """Headers added, set and removed."""

    add: dict[str, str] = Field(default_factory=dict)
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class TransformSide(StrictModel):
    """A transform of the request or of the response."""

    headers: HeaderTransform | None = None
    body: dict[str, Any] | None = Field(
        default=None, description="The gateway's body transform, kept as written."
    )


class Transform(StrictModel):
    """Request and response rewriting done by the gateway."""

    request: TransformSide | None = None
    response: TransformSide | None = None

    @property
    def active(self) -> bool:
        sides = [side for side in (self.request, self.response) if side is not None]
        return any(
            side.body or (side.headers and side.headers != HeaderTransform()) for side in sides
        )
