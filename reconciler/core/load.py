"""Load a config repository's files into validated documents, collecting every problem."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from pydantic import ValidationError

from reconciler.core.alert_config import routing_diagnostics, unrouted_receivers
from reconciler.core.compat import compat_diagnostics, compat_errors, one_notice_per_kind
from reconciler.core.diagnostics import Diagnostic, format_field
from reconciler.core.documents import Config, Located, SourceFile, UnreadableFile
from reconciler.core.drive import decide
from reconciler.core.gatewayfile import load_gateway
from reconciler.core.ignore import IGNORE_FILE, without_ignored
from reconciler.core.validation import (
    MAX_ERRORS_PER_DOCUMENT,
    type_name,
    validation_diagnostics,
)
from reconciler.core.yamlparse import PositionedMap, locate, parse_yaml
from schemas.base import StrictModel
from schemas.gateway import GATEWAY_SECTIONS
from schemas.kinds import API_VERSIONS, KINDS
from schemas.limits import MAX_FILE_BYTES, limit_hint
from schemas.partial import partial_model, until_unknown

_IGNORE_HINT = f"leave it out with a {IGNORE_FILE} (gitignore syntax) at the repository root"


@dataclass(frozen=True)
class FileResult:
    """The valid documents of one file and the problems found in it."""

    documents: list[Located[Any]]
    diagnostics: list[Diagnostic]
    # The file holds some YAML document (a gateway file without routes is one, yet loads
    # none); False when it has only comments or is empty.
    written: bool = True
    # (kind, metadata.name) of its documents that did not validate: what names them is not
    # told that they do not exist (their own errors say what is wrong).
    failed: list[tuple[str, str]] = field(default_factory=list)


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


def _printable(text: str) -> str:
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _subject_of(raw: Any) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        return ""
    # One diagnostic is one line: a name with a newline in it (refused) is shown escaped.
    kind = _printable(raw["kind"])
    metadata = raw.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(name, str):
        return kind
    if kind != "Canary":
        return f"{kind}/{_printable(name)}"
    namespace = metadata.get("namespace", "default")
    shown = _printable(namespace) if isinstance(namespace, str) else "?"
    return f"{kind}/{shown}/{_printable(name)}"


def _subject_at(documents: list[Any], index: int | None) -> str:
    """The `Kind/name` of the document a YAML problem is in, when it was built."""
    return _subject_of(documents[index]) if index is not None and index < len(documents) else ""


def _rule_diagnostics(document: Located[Any]) -> list[Diagnostic]:
    model: StrictModel = document.model
    found = [document.diagnostic(where, message) for where, message in model.problems()]
    return found + compat_diagnostics(document)


def _rules_beside(
    path: str,
    raw: PositionedMap,
    error: ValidationError,
    model_type: type[StrictModel],
    subject: str,
    field_errors: list[Diagnostic],
) -> list[Diagnostic]:
    """The errors of the cross-field rules (and refused fields, broken expressions) of a
    document whose fields did not all validate, run on the fields that did
    (`schemas.partial`): pydantic's field errors would hide them until fixed. A rule needing
    a field that failed is skipped, its input being unknown, and so are the rules after it in
    its model (or `separately` group); none is reported twice."""
    details = error.errors(include_url=False)
    if len(details) > MAX_ERRORS_PER_DOCUMENT:
        return []  # one mistake repeated: its errors say enough
    model = partial_model(model_type, raw, [tuple(detail["loc"]) for detail in details])
    if model is None:
        return []
    found: list[Diagnostic] = []
    for where, message in chain(model.problems(), until_unknown(compat_errors(model))):
        line, column = locate(raw, where) or (1, 1)
        diagnostic = Diagnostic(path, line, column, subject, format_field(where), message)
        if diagnostic not in field_errors and diagnostic not in found:
            found.append(diagnostic)
    return found


def _load_document(path: str, raw: Any, start: tuple[int, int] = (1, 1)) -> FileResult:
    if not isinstance(raw, PositionedMap):
        line, column = getattr(raw, "start", start)
        message = f"expected a mapping with apiVersion and kind, got {type_name(raw)}"
        return FileResult([], [Diagnostic(path, line, column, "", "", message)])
    if "apiVersion" not in raw and any(key in GATEWAY_SECTIONS for key in raw):
        return FileResult(*load_gateway(path, raw))
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    for name, value in (("apiVersion", api_version), ("kind", kind)):
        if name in raw and not isinstance(value, str):
            line, column = locate(raw, (name,)) or raw.start
            message = f"expected a string, got {type_name(value)}"
            return FileResult([], [Diagnostic(path, line, column, "", name, message)])
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
        message = (
            f"kind is missing (expected one of: {known})"
            if kind is None
            else f"unknown kind {kind!r} for {api_version} (expected one of: {known})"
        )
        return FileResult([], [Diagnostic(path, line, column, subject, "kind", message)])
    model_type = KINDS[kind]
    try:
        model = model_type.model_validate(raw)
    except ValidationError as error:
        found = validation_diagnostics(path, raw, error, model_type, subject)
        found += _rules_beside(path, raw, error, model_type, subject, found)
        metadata = raw.get("metadata")
        named = metadata.get("name") if isinstance(metadata, dict) else None
        return FileResult([], found, failed=[(kind, named)] if isinstance(named, str) else [])
    located = Located(model, kind, path, raw)
    return FileResult([located], _rule_diagnostics(located))


def load_file(path: str, content: bytes) -> FileResult:
    """Parse and validate every document of one file."""
    parsed = parse_yaml(content)
    documents: list[Located[Any]] = []
    diagnostics = [
        Diagnostic(
            path, p.line, p.column, _subject_at(parsed.documents, p.document), p.field, p.message
        )
        for p in parsed.problems
    ]
    failed: list[tuple[str, str]] = []
    for raw, start in zip(parsed.documents, parsed.starts, strict=True):
        if raw is None:
            continue
        result = _load_document(path, raw, start)
        documents += result.documents
        diagnostics += result.diagnostics
        failed += result.failed
    written = any(raw is not None for raw in parsed.documents) or bool(parsed.problems)
    return FileResult(documents, diagnostics, written, failed)


def _collect(documents: Iterable[Located[Any]]) -> tuple[Config, list[Diagnostic]]:
    config = Config()
    tables = config.by_kind()
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


def _reference_diagnostics(config: Config, failed: set[tuple[str, str]]) -> list[Diagnostic]:
    """Names of other documents that no document declares (`failed`: declared, but did not
    validate: their own errors are enough)."""
    found = []
    regions = set(config.regions) | {name for kind, name in failed if kind == "Region"}
    known = ", ".join(sorted(config.regions)) or "none defined"
    for agent in config.agents.values():
        region = agent.model.spec.region
        if region not in regions:
            message = f"region {region!r} does not exist (regions: {known})"
            found.append(agent.diagnostic(("spec", "region"), message))
    for window in config.maintenance.values():
        for index, region in enumerate(window.model.spec.regions):
            if region not in regions:
                message = f"region {region!r} does not exist (regions: {known})"
                found.append(window.diagnostic(("spec", "regions", index), message))
    receivers = {name for kind, name in failed if kind == "Receiver"}
    return found + _path_clashes(config) + routing_diagnostics(config, receivers)


def _claims(path: str, prefix: bool) -> list[tuple[str, str]]:
    """The requests a route takes: an exact path, and every path under it for a prefix
    route (`/api` takes `/api` and `/api/…`; `/api/` only `/api/…`)."""
    if not prefix:
        return [("exact", path)]
    if path.endswith("/"):
        return [("prefix", path)]
    return [("exact", path), ("prefix", path + "/")]


def _path_clashes(config: Config) -> list[Diagnostic]:
    """An error for each Route taking requests another Route takes already, both put on
    nginx: which one answers would depend on the gateway (nginx refuses such a config
    outright). Routes that are not driven (methods, header matches, ...) are left to the
    gateway project, which tells routes on one path apart by those."""
    found = []
    taken: dict[tuple[str, str], Located[Any]] = {}
    for key in sorted(config.routes):
        route = config.routes[key]
        spec = route.model.spec
        if not decide(spec).driven:  # kept off nginx: the gateway tells such routes apart
            continue
        for claim in _claims(spec.path, spec.path_prefix):
            first = taken.setdefault(claim, route)
            if first is route:
                continue
            where = first.diagnostic(("spec", "path"), "")
            kind, path = claim
            found.append(
                route.diagnostic(
                    ("spec", "path"),
                    f"{'every path under' if kind == 'prefix' else 'the path'} {path!r} is "
                    f"routed by {first.subject} already ({where.path}:{where.line}); a request "
                    "must have one route",
                )
            )
            break
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
    written = False  # some file holds a YAML document
    failed: set[tuple[str, str]] = set()  # documents that did not validate (`FileResult`)
    every = list(files)
    # Looked into at most `MAX_HIDDEN_READ` hidden files (a `.venv` may hold many YAML files).
    candidates = [f for f in every if f.hidden][:MAX_HIDDEN_READ]
    hidden = sorted(f.path for f in candidates if _looks_like_config(f))
    listed, unreadable = _readable_ignore_file([f for f in every if not f.hidden])
    kept, left_out = without_ignored(listed)
    diagnostics = unreadable + _ignore_diagnostics(kept, left_out, ignoring=len(listed) > len(kept))
    diagnostics += _hidden_notice(hidden)
    for source in sorted(kept, key=lambda f: f.path):
        cache_key = (source.path, source.blob)
        result = cache.get(cache_key) if cache is not None else None
        if result is None:
            try:
                content = source.read()
            except UnreadableFile as error:
                diagnostics.append(Diagnostic(source.path, 1, 1, "", "", str(error)))
                continue
            result = load_file(source.path, content)
            if cache is not None:
                cache[cache_key] = result
        documents += result.documents
        diagnostics += result.diagnostics
        written = written or result.written
        failed.update(result.failed)
    skipped = [
        f"{len(files)} {why}"
        for files, why in (
            (left_out, f"left out by {IGNORE_FILE}"),
            ([f for f in every if f.hidden], "under hidden paths, never loaded"),
        )
        if files
    ]
    diagnostics += _nothing_loaded(kept, written, diagnostics, skipped)
    config, duplicates = _collect(documents)
    diagnostics += duplicates + _reference_diagnostics(config, failed)
    if not any(d.severity == "error" for d in diagnostics):
        # Warnings about the repository as a whole: with errors, a document they would
        # miss may just have failed to load.
        diagnostics += unrouted_receivers(config)
    diagnostics = one_notice_per_kind(sorted(diagnostics))
    config.notices.extend(d for d in diagnostics if d.severity == "notice")
    return LoadResult(config, [d for d in diagnostics if d.severity != "notice"])


# Hidden YAML files read at most, to tell config from other tools' files (`_hidden_notice`).
MAX_HIDDEN_READ = 1_000
# What only a config file of ours holds (an apiVersion we read, or a gateway file's routes).
_CONFIG_MARK = re.compile(rb"canary-reconciler/v|canaries\.flanksource\.com/|^routes:", re.M)


def _looks_like_config(source: SourceFile) -> bool:
    """Whether a hidden YAML file would be config (not another tool's, as a CI workflow)."""
    try:
        return bool(_CONFIG_MARK.search(source.read()[:MAX_FILE_BYTES]))
    except UnreadableFile:
        return False


def _hidden_notice(hidden: list[str]) -> list[Diagnostic]:
    """A notice naming the YAML files left out for their hidden paths (`.canaries/x.yaml`):
    by design, but never without a word."""
    if not hidden:
        return []
    message = (
        f"left out {len(hidden)} config file(s) with a hidden path (a directory or name starting "
        f"with '.'): {_first_names(hidden)}; move them out of it to load them"
    )
    return [Diagnostic(hidden[0], 1, 1, "", "", message, "notice")]


def _first_names(names: list[str], shown: int = 5) -> str:
    """The first `shown` file names of a notice, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _nothing_loaded(
    kept: list[SourceFile], written: bool, diagnostics: list[Diagnostic], skipped: list[str]
) -> list[Diagnostic]:
    """An error when no file is left to read, or the files read hold no YAML document at all
    (only comments, or empty): loaded, that would be a plan to delete everything. A gateway
    file without routes (a data-plane node's) is a document, and loads.

    Args:
        skipped: why files were not read, if any ("3 under hidden paths").
    """
    if written or any(d.severity == "error" for d in diagnostics):
        return []
    refusing = "refusing to load an empty configuration (it would delete everything)"
    if not kept:
        why = f" ({', '.join(skipped)})" if skipped else ""
        return [Diagnostic(".", 1, 1, "", "", f"no YAML file to read{why}: {refusing}")]
    first = min(f.path for f in kept)
    message = f"no document in {len(kept)} file(s) (only comments or empty): {refusing}"
    return [Diagnostic(first, 1, 1, "", "", message)]


def _constant(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def _readable_ignore_file(files: list[SourceFile]) -> tuple[list[SourceFile], list[Diagnostic]]:
    """The files with an unreadable `.reconcileignore` left out, and the error saying so."""
    for source in files:
        if source.path == IGNORE_FILE:
            others = [f for f in files if f is not source]
            try:
                content = source.read()
            except UnreadableFile as error:
                return others, [Diagnostic(IGNORE_FILE, 1, 1, "", "", str(error))]
            if len(content) > MAX_FILE_BYTES:
                message = f"the file is larger than {MAX_FILE_BYTES} bytes; " + limit_hint(
                    "file size", f"{MAX_FILE_BYTES} bytes"
                )
                return others, [Diagnostic(IGNORE_FILE, 1, 1, "", "", message)]
            # Read once: the ignore rules and the cache key see the same bytes.
            readable = SourceFile(source.path, source.blob, _constant(content))
            return [readable if f is source else f for f in files], []
    return files, []


def _ignore_diagnostics(
    kept: list[SourceFile], left_out: list[SourceFile], ignoring: bool
) -> list[Diagnostic]:
    if ignoring and not kept:
        message = (
            f"no config file is left to load ({len(left_out)} left out): refusing to load an empty "
            "configuration (it would delete everything)"
        )
        return [Diagnostic(IGNORE_FILE, 1, 1, "", "", message)]
    if not left_out:
        return []
    names = sorted(f.path for f in left_out)
    message = f"left out {len(names)} file(s): {_first_names(names)}"
    return [Diagnostic(IGNORE_FILE, 1, 1, "", "", message, "notice")]
