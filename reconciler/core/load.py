"""Load a config repository's files into validated documents, collecting every problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.core.diagnostics import Diagnostic, FieldPath, format_field
from reconciler.core.documents import Config, Located, SourceFile
from reconciler.core.ignore import IGNORE_FILE, without_ignored
from reconciler.core.validation import explain, type_name
from reconciler.core.yamlparse import PositionedMap, locate, parse_yaml
from schemas.base import Metadata, StrictModel
from schemas.gateway import (
    GATEWAY_SECTIONS,
    READ_SECTIONS,
    GatewayBackend,
    GatewayRoute,
    GatewayRouteFields,
    GatewayUpstream,
    backend_problems,
)
from schemas.kinds import API_VERSIONS, KINDS
from schemas.route import Backend, CanaryDeployment, RouteDocument, RouteSpec, TrafficGroup

# The group a gateway route's plain `backends:` list (or route-level upstream) becomes.
PLAIN_GROUP = "default"
# Route features a gateway route hands to its Route as they are.
_COPIED = (
    "methods", "strip_prefix", "timeout", "retries", "auth", "rate_limit", "sticky",
    "blue_green", "ab_test", "cache", "circuit_breaker", "transform",
)  # fmt: skip
# The gateway's YAML decoder drops keys it does not know without a word; we do not.
_NOT_A_GATEWAY_FIELD = " (not a field of the gateway project either: it ignores such keys silently)"
_IGNORE_HINT = f"leave it out with a {IGNORE_FILE} (gitignore syntax) at the repository root"


@dataclass(frozen=True)
class FileResult:
    """The valid documents of one file and the problems found in it."""

    documents: list[Located[Any]]
    diagnostics: list[Diagnostic]


# Parsed and validated files by (path, git blob SHA): unchanged files are never parsed twice.
ParseCache = MutableMapping[tuple[str, str], FileResult]


@dataclass(frozen=True)
class LoadResult:
    """A loaded configuration and every diagnostic of the load."""

    config: Config
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def _subject_of(raw: Any) -> str:
    if not isinstance(raw, dict):
        return ""
    kind = raw.get("kind")
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        return kind if isinstance(kind, str) else ""
    name = metadata.get("name")
    if isinstance(kind, str) and isinstance(name, str):
        namespace = metadata.get("namespace", "default") if kind == "Canary" else None
        return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    return kind if isinstance(kind, str) else ""


def _validation_diagnostics(
    path: str,
    raw: Any,
    error: ValidationError,
    model: type[BaseModel],
    subject: str,
    prefix: tuple[str | int, ...] = (),
) -> list[Diagnostic]:
    found = []
    for detail in error.errors(include_url=False):
        loc = prefix + tuple(detail["loc"])
        line, column = locate(raw, loc) or (1, 1)
        found.append(
            Diagnostic(path, line, column, subject, format_field(loc), explain(detail, model))
        )
    return found


def _rule_diagnostics(document: Located[Any]) -> list[Diagnostic]:
    model: StrictModel = document.model
    return [document.diagnostic(where, message) for where, message in model.problems()]


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
            diagnostics += _validation_diagnostics(
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
            found.append(
                (where, f"upstream {name!r} lists no backends (service discovery is not "
                 "supported here: list the backends under upstreams.{name}.backends)")
            )  # fmt: skip
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


def _load_gateway(path: str, raw: PositionedMap) -> FileResult:
    documents: list[Located[Any]] = []
    diagnostics = _gateway_sections(path, raw)
    upstreams, found = _upstreams(path, raw)
    diagnostics += found
    entries = raw.get("routes", [])
    if not isinstance(entries, list):
        diagnostics.append(_at(path, raw, ("routes",), "", "expected a list"))
        return FileResult(documents, diagnostics)
    for index, entry in enumerate(entries):
        route_id = entry.get("id") if isinstance(entry, dict) else None
        subject = f"Route/{route_id}" if isinstance(route_id, str) else ""
        try:
            route = GatewayRoute.model_validate(entry)
        except ValidationError as error:
            diagnostics += [
                replace(d, message=d.message + _NOT_A_GATEWAY_FIELD)
                if d.message.startswith("unknown field")
                else d
                for d in _validation_diagnostics(
                    path, raw, error, GatewayRoute, subject, ("routes", index)
                )
            ]
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
    return FileResult(documents, diagnostics)


def _load_document(path: str, raw: Any) -> FileResult:
    if not isinstance(raw, PositionedMap):
        line, column = getattr(raw, "start", (1, 1))
        message = f"expected a mapping with apiVersion and kind, got {type_name(raw)}"
        return FileResult([], [Diagnostic(path, line, column, "", "", message)])
    if "apiVersion" not in raw and any(key in GATEWAY_SECTIONS for key in raw):
        return _load_gateway(path, raw)
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    subject = _subject_of(raw)
    known = ", ".join(sorted(API_VERSIONS))
    if "apiVersion" not in raw:
        message = (
            f"apiVersion is missing (expected one of: {known}, or a gateway config with "
            f"top-level routes:); if this file is not reconciler config, {_IGNORE_HINT}"
        )
        return FileResult([], [Diagnostic(path, *raw.start, subject, "apiVersion", message)])
    if api_version not in API_VERSIONS:
        line, column = locate(raw, ("apiVersion",)) or raw.start
        of_kind = f"kind {kind}; " if isinstance(kind, str) else ""
        message = (
            f"unknown apiVersion {api_version!r} ({of_kind}expected one of: {known}); if this "
            f"file is not reconciler config (a Kubernetes manifest, a kustomization.yaml), "
            f"{_IGNORE_HINT}"
        )
        return FileResult([], [Diagnostic(path, line, column, subject, "apiVersion", message)])
    if kind not in API_VERSIONS[api_version]:
        line, column = locate(raw, ("kind",)) or raw.start
        known = ", ".join(sorted(API_VERSIONS[api_version]))
        message = f"unknown kind {kind!r} for {api_version} (expected one of: {known})"
        return FileResult([], [Diagnostic(path, line, column, subject, "kind", message)])
    model_type = KINDS[kind]
    try:
        model = model_type.model_validate(raw)
    except ValidationError as error:
        return FileResult([], _validation_diagnostics(path, raw, error, model_type, subject))
    located = Located(model, kind, path, raw)
    return FileResult([located], _rule_diagnostics(located))


def load_file(path: str, content: bytes) -> FileResult:
    """Parse and validate every document of one file."""
    parsed = parse_yaml(content)
    documents: list[Located[Any]] = []
    diagnostics = [Diagnostic(path, p.line, p.column, "", "", p.message) for p in parsed.problems]
    for raw in parsed.documents:
        if raw is None:
            continue
        result = _load_document(path, raw)
        documents += result.documents
        diagnostics += result.diagnostics
    return FileResult(documents, diagnostics)


def _collect(documents: Iterable[Located[Any]]) -> tuple[Config, list[Diagnostic]]:
    config = Config()
    tables: dict[str, dict[str, Located[Any]]] = {
        "Region": config.regions,
        "Agent": config.agents,
        "Canary": config.canaries,
        "Route": config.routes,
    }
    diagnostics: list[Diagnostic] = []
    for document in documents:
        table = tables[document.kind]
        first = table.get(document.key)
        if first is not None:
            line, _ = locate(first.raw, first.file_field(("metadata", "name"))) or (1, 1)
            message = f"{document.subject} is already defined at {first.path}:{line}"
            diagnostics.append(document.diagnostic(("metadata", "name"), message))
            continue
        table[document.key] = document
    return config, diagnostics


def _reference_diagnostics(config: Config) -> list[Diagnostic]:
    found = []
    for agent in config.agents.values():
        region = agent.model.spec.region
        if region not in config.regions:
            known = ", ".join(sorted(config.regions)) or "none defined"
            message = f"region {region!r} does not exist (regions: {known})"
            found.append(agent.diagnostic(("spec", "region"), message))
    return found


def load_config(files: Iterable[SourceFile], cache: ParseCache | None = None) -> LoadResult:
    """Load every file of a repository revision into one configuration.

    Args:
        files: the repository's YAML files, and its root `.reconcileignore` when it has one
            (files it matches are left out).
        cache: parsed files by (path, blob SHA), read and filled in; pass the same mapping
            to later loads so only changed files are parsed again.

    Returns:
        The configuration of every valid document and all diagnostics, sorted by place.
        Notices (how a file was read, nothing to fix) are kept apart in `config.notices`.
    """
    documents: list[Located[Any]] = []
    diagnostics: list[Diagnostic] = _ignore_diagnostics(*(kept_and_left := without_ignored(files)))
    for source in sorted(kept_and_left[0], key=lambda f: f.path):
        cache_key = (source.path, source.blob)
        result = cache.get(cache_key) if cache is not None else None
        if result is None:
            result = load_file(source.path, source.read())
            if cache is not None:
                cache[cache_key] = result
        documents += result.documents
        diagnostics += result.diagnostics
    config, duplicates = _collect(documents)
    diagnostics += duplicates + _reference_diagnostics(config)
    config.notices.extend(sorted(d for d in diagnostics if d.severity == "notice"))
    return LoadResult(config, sorted(d for d in diagnostics if d.severity != "notice"))


def _ignore_diagnostics(kept: list[SourceFile], left_out: list[SourceFile]) -> list[Diagnostic]:
    if not left_out:
        return []
    if not kept:
        message = (
            f"every file is left out ({len(left_out)}): refusing to load an empty "
            "configuration (it would delete everything)"
        )
        return [Diagnostic(IGNORE_FILE, 1, 1, "", "", message)]
    names = sorted(f.path for f in left_out)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    message = f"left out {len(names)} file(s): {shown}"
    return [Diagnostic(IGNORE_FILE, 1, 1, "", "", message, "notice")]
