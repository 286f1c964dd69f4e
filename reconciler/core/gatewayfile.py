"""Load a config file of the gateway project (wudi/gateway): its routes become Routes, its
upstreams resolve their references, and its other sections are reported once as not read."""

from __future__ import annotations

import copy
import difflib
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from reconciler.core.diagnostics import Diagnostic, FieldPath, format_field
from reconciler.core.documents import Located
from reconciler.core.validation import validation_diagnostics
from reconciler.core.yamlparse import PositionedMap, locate
from schemas.base import Metadata
from schemas.gateway import (
    GATEWAY_SECTIONS,
    READ_SECTIONS,
    GatewayBackend,
    GatewayRoute,
    GatewayRouteFields,
    GatewayUpstream,
    backend_problems,
)
from schemas.route import Backend, CanaryDeployment, RouteDocument, RouteSpec, TrafficGroup

# The group a gateway route's plain `backends:` list (or route-level upstream) becomes.
PLAIN_GROUP = "default"
# Route features a gateway route hands to its Route as they are.
_COPIED = (
    "methods", "strip_prefix", "timeout", "retries", "auth", "rate_limit", "sticky",
    "blue_green", "ab_test", "cache", "circuit_breaker", "transform",
)  # fmt: skip
# The gateway's YAML decoder drops keys it does not know without a word: a route using one
# loads there as if the key were absent. We load it the same way, but say so.
_IGNORED_AS_THE_GATEWAY_DOES = (
    " (not a field of the gateway project either: ignored, as the gateway ignores it silently)"
)


def _at(path: str, raw: Any, loc: FieldPath, subject: str, message: str) -> Diagnostic:
    line, column = locate(raw, loc) or (1, 1)
    return Diagnostic(path, line, column, subject, format_field(loc), message)


def _gateway_sections(path: str, raw: PositionedMap) -> list[Diagnostic]:
    found = []
    for key in raw:
        if key not in GATEWAY_SECTIONS:
            close = difflib.get_close_matches(str(key), GATEWAY_SECTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown field {key!r}: not a section of the gateway's config{hint}"
            found.append(_at(path, raw, (key,), "", message))
    others = [str(key) for key in raw if key in GATEWAY_SECTIONS and key not in READ_SECTIONS]
    if others:
        message = (
            f"{', '.join(others)}: configure the gateway process itself and are not read "
            "here; the routes (with their upstreams) are"
        )
        line, column = raw.positions[others[0]]
        found.append(Diagnostic(path, line, column, "", "", message, "notice"))
    return found


def _upstreams(
    path: str, raw: PositionedMap
) -> tuple[dict[str, GatewayUpstream], list[Diagnostic]]:
    section = raw.get("upstreams")
    if section is None:
        return {}, []
    if not isinstance(section, dict):
        return {}, [_at(path, raw, ("upstreams",), "", "expected a mapping of named upstreams")]
    upstreams: dict[str, GatewayUpstream] = {}
    diagnostics: list[Diagnostic] = []
    for name, entry in section.items():
        try:
            upstreams[str(name)] = GatewayUpstream.model_validate(entry)
        except ValidationError as error:
            diagnostics += validation_diagnostics(
                path, raw, error, GatewayUpstream, "", ("upstreams", name)
            )
    return upstreams, diagnostics


def _resolve(
    backends: list[GatewayBackend], upstream: str | None, upstreams: dict[str, GatewayUpstream]
) -> list[Backend]:
    chosen = backends if upstream is None else upstreams[upstream].backends
    return [backend.backend() for backend in chosen]


def _reference_problems(
    route: GatewayRouteFields, upstreams: dict[str, GatewayUpstream]
) -> list[tuple[FieldPath, str]]:
    known = ", ".join(sorted(upstreams)) or "none defined"
    references: list[tuple[FieldPath, str | None]] = [(("upstream",), route.upstream)]
    references += [
        (("traffic_split", index, "upstream"), group.upstream)
        for index, group in enumerate(route.traffic_split)
    ]
    found: list[tuple[FieldPath, str]] = []
    for where, name in references:
        if name is None:
            continue
        if name not in upstreams:
            found.append((where, f"upstream {name!r} is not defined (upstreams: {known})"))
        elif problems := list(backend_problems(("backends",), upstreams[name].backends)):
            found += [(where, f"upstream {name!r}: {format_field(at)}: {m}") for at, m in problems]
        elif not upstreams[name].backends:
            message = (
                f"upstream {name!r} lists no backends (service discovery is not supported "
                f"here: list them under upstreams.{name}.backends)"
            )
            found.append((where, message))
    return found


def _route_spec(route: GatewayRouteFields, upstreams: dict[str, GatewayUpstream]) -> RouteSpec:
    """The Route a gateway route is: upstreams resolved, a plain backend list as one group."""
    groups = [
        TrafficGroup(
            name=group.name,
            weight=group.weight,
            backends=_resolve(group.backends, group.upstream, upstreams),
            match_headers=group.match_headers or None,
        )
        for group in route.traffic_split
    ]
    if not groups and (route.backends or route.upstream):
        # The gateway balances a plain backend list as one pool: one group with all traffic.
        backends = _resolve(route.backends, route.upstream, upstreams)
        groups = [TrafficGroup(name=PLAIN_GROUP, weight=100, backends=backends)]
    canary = route.canary
    deployment = None
    if canary is not None and canary.canary_group is not None:
        deployment = CanaryDeployment(
            enabled=canary.enabled,
            canary_group=canary.canary_group,
            auto_start=canary.auto_start,
            steps=canary.steps,
            analysis=canary.analysis,
            rollback_to="zero" if canary.rollback_to == "zero" else "original",
        )
    features = {name: getattr(route, name) for name in _COPIED if name in route.model_fields_set}
    return RouteSpec(
        path=route.path,
        path_prefix=route.path_prefix,
        traffic_split=groups or None,
        canary=deployment,
        gateway_fields=route.other_fields() or None,
        **features,
    )


def _ignored_gateway_field(diagnostic: Diagnostic) -> Diagnostic:
    """An unknown key as a warning that says the gateway drops it too; a route's 117 allowed
    names are too many to list, so point at the reference instead."""
    message = diagnostic.message
    allowed = message.find(" (allowed: ")
    if allowed >= 0 and message.count(",") > 30:
        message = message[:allowed] + " (fields: docs/yaml-reference.md#gateway-files)"
    return replace(diagnostic, message=message + _IGNORED_AS_THE_GATEWAY_DOES, severity="warning")


def _without_unknown_keys(entry: Any, error: ValidationError) -> Any | None:
    """The route entry without the keys the gateway would drop, when unknown keys are its only
    errors (None otherwise: a real error is reported as one)."""
    details = error.errors(include_url=False)
    if not details or any(detail["type"] != "extra_forbidden" for detail in details):
        return None
    cleaned = copy.deepcopy(entry)
    for detail in details:
        *parents, key = detail["loc"]
        container = cleaned
        for part in parents:
            container = container[part]
        container.pop(key, None)
    return cleaned


def _validate_route(
    path: str, raw: PositionedMap, index: int, subject: str
) -> tuple[Any, list[Diagnostic]]:
    """The route at `routes[index]`, loaded as the gateway loads it (unknown keys dropped,
    with a warning each), or None with the errors."""
    entry = raw["routes"][index]
    prefix = ("routes", index)
    try:
        return GatewayRoute.model_validate(entry), []
    except ValidationError as error:
        found = validation_diagnostics(path, raw, error, GatewayRoute, subject, prefix)
        cleaned = _without_unknown_keys(entry, error)
        if cleaned is None:
            return None, found
    try:
        route = GatewayRoute.model_validate(cleaned)
    except ValidationError as error:
        return None, validation_diagnostics(path, raw, error, GatewayRoute, subject, prefix)
    return route, [_ignored_gateway_field(d) for d in found]


def load_gateway(path: str, raw: PositionedMap) -> tuple[list[Located[Any]], list[Diagnostic]]:
    """The Routes of one gateway file and every problem and notice found in it."""
    documents: list[Located[Any]] = []
    diagnostics = _gateway_sections(path, raw)
    upstreams, found = _upstreams(path, raw)
    diagnostics += found
    entries = raw.get("routes", [])
    if not isinstance(entries, list):
        diagnostics.append(_at(path, raw, ("routes",), "", "expected a list"))
        return documents, diagnostics
    for index, entry in enumerate(entries):
        route_id = entry.get("id") if isinstance(entry, dict) else None
        subject = f"Route/{route_id}" if isinstance(route_id, str) else ""
        route, found = _validate_route(path, raw, index, subject)
        diagnostics += found
        if route is None:
            continue
        problems = list(route.problems()) + _reference_problems(route, upstreams)
        if problems:
            diagnostics += [
                _at(path, raw, ("routes", index, *where), subject, message)
                for where, message in problems
            ]
            continue
        if route.traffic_split and route.backends:
            message = "not used: the traffic_split groups are served, as the gateway does"
            notice = _at(path, raw, ("routes", index, "backends"), subject, message)
            diagnostics.append(replace(notice, severity="notice"))
        spec = _route_spec(route, upstreams)
        model = RouteDocument(metadata=Metadata(name=route.id), spec=spec)
        documents.append(Located(model, "Route", path, raw, ("routes", index)))
    return documents, diagnostics
