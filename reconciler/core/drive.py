"""Whether our nginx data plane may serve a route as written, decided from its spec alone.

The nginx adapter reproduces a route's path match, traffic split and backends, and nothing of
the gateway project's own features. A feature that protects the backends or changes what a
client gets (authentication, rate limits, rewriting, header-based routing, ...) cannot be
left out silently, so a route using one is *not driven*: it is kept in the desired state and
shown in the plan, but never put on nginx and no canary run starts for it. So is a route with a
backend nginx cannot take as an upstream server (a path, credentials, an IPv6 zone, ...:
`core/upstreams.py`, the rule the nginx config is rendered by), which every sync would only
have refused. Features that only tune or observe (caching, circuit breaking, timeouts, sticky
groups, ...) are served without, and the plan says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.core.upstreams import group_problems
from schemas.route import RouteSpec, unreachable_on_nginx

# Gateway route fields (schemas/routefeatures.py OTHER_ROUTE_FIELDS) whose absence changes
# neither who reaches the backends nor what a client gets back.
TUNING_FIELDS = frozenset(
    {
        "retry_policy", "timeout_policy", "load_balancer", "consistent_hash", "coalesce",
        "outlier_detection", "access_log", "audit_log", "baggage", "completion_header",
        "compression", "etag", "cdn_cache_headers", "edge_cache_rules", "streaming", "mirror",
        "traffic_replay", "backpressure", "slo", "request_cost", "deprecation", "error_pages",
    }
)  # fmt: skip
# httprouter syntax the gateway's router understands: `:name`, `{name}`, `*name`.
_PATH_PATTERN = re.compile(r"[:{}*]")


@dataclass(frozen=True)
class DriveDecision:
    """What keeps a route off nginx, and what nginx serves it without."""

    blocking: tuple[str, ...] = ()
    unapplied: tuple[str, ...] = ()

    @property
    def driven(self) -> bool:
        return not self.blocking


def active(value: Any) -> bool:
    """Whether a gateway feature written as `value` does anything: not empty, not false, and
    not a mapping with `enabled: false` (the gateway's switch for every feature block)."""
    if isinstance(value, dict):
        return bool(value) and value.get("enabled", True) is not False
    return bool(value)


def _group_reasons(spec: RouteSpec) -> list[str]:
    reasons = []
    for group in spec.traffic_split or []:
        if group.match_headers:
            reasons.append(
                f"traffic_split[{group.name}].match_headers: nginx here does not choose groups "
                "by request headers"
            )
        reasons += [
            f"traffic_split[{group.name}].{field}: {reason}"
            for field, reason in group_problems(group)
        ]
    return reasons


def decide(spec: RouteSpec) -> DriveDecision:
    """Decide whether nginx may serve `spec`, and list what it would serve it without.

    Args:
        spec: a route, from a Route document or a gateway file.

    Returns:
        The reasons the route is not driven (empty when it is), and the features nginx
        serves it without.
    """
    blocking: list[str] = []
    unapplied: list[str] = []
    if spec.auth is not None and spec.auth.required:
        blocking.append("auth.required: nginx here does not authenticate requests")
    if spec.rate_limit is not None and spec.rate_limit.active:
        blocking.append("rate_limit: nginx here does not limit request rates")
    if spec.transform is not None and spec.transform.active:
        blocking.append("transform: nginx here does not rewrite headers or bodies")
    if spec.methods:
        blocking.append("methods: nginx here does not restrict request methods")
    if spec.strip_prefix:
        blocking.append("strip_prefix: nginx here passes the request path unchanged")
    if _PATH_PATTERN.search(spec.path):
        blocking.append(
            f"path {spec.path!r} has parameters or wildcards; nginx here matches literal paths"
        )
    if unreachable := unreachable_on_nginx(spec.path):  # a gateway file's: the gateway takes it
        blocking.append(f"path: {unreachable}")
    if spec.blue_green is not None and spec.blue_green.enabled:
        blocking.append(
            "blue_green: the gateway's blue-green controller picks the serving group; "
            "ours does not run it"
        )
    blocking += _group_reasons(spec)
    for name, value in (spec.gateway_fields or {}).items():
        if not active(value):
            continue
        if name in TUNING_FIELDS:
            unapplied.append(name)
        else:
            blocking.append(f"{name}: the gateway's {name} has no equivalent on nginx here")
    for name in ("sticky", "ab_test", "cache", "circuit_breaker"):
        feature = getattr(spec, name)
        if feature is not None and feature.enabled:
            unapplied.append(name)
    unapplied += [name for name in ("timeout", "retries") if getattr(spec, name)]
    return DriveDecision(tuple(blocking), tuple(sorted(unapplied)))
