"""Point a copied config repository at the demo's local backends, keeping comments.

The sample's checks target `*.example.com`, which does not resolve on a machine without
network (and would not answer like the sample expects if it did). The demo rewrites, and
reports, exactly these fields; everything else is the sample as written:

1. Canary HTTP `url`s: to the local `healthy` service (same path and query), or the `flaky`
   one for `search.*` hosts. `http://`: the local services do not speak TLS.
2. Canary TCP `endpoint`s: to one local listener per endpoint.
3. Canary TLS `endpoint`s: to a local TLS listener whose self-signed certificate names the
   original host; `serverName` is set to that host, so SNI and the certificate still say it.
4. Canary DNS checks: `server`/`port` to the local responder, which answers each query with
   the records the check expects (`exactreply`; else 127.0.0.1 for A, ::1 for AAAA).
5. Canary `schedule`s: `@every 10s`, so results arrive within seconds (the sample runs every
   15s to every 6h).
6. Route backends: one local backend per backend URL, answering with its name.
7. Route canary timing: each step's `pause` to 30s, analysis `interval` to 5s and
   `min_requests` to at most 10, so a run steps within minutes on a trickle of traffic.
8. `Receiver` and `AlertRouting` documents are removed: their destinations (PagerDuty,
   Opsgenie, Slack, SMTP, chat webhooks) are outside this machine and their secrets are not
   set, so the demo sends no notifications; its events are in the server's log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from reconciler.core.yaml_edit import edit_document, split_documents
from reconciler.demo.backends import DemoBackends
from reconciler.sources.worktree import is_config_path

DEMO_SCHEDULE = "@every 10s"
DEMO_PAUSE = "30s"
DEMO_INTERVAL = "5s"
DEMO_MIN_REQUESTS = 10
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_DNS_ANSWERS = {"A": ["127.0.0.1"], "AAAA": ["::1"]}


@dataclass(frozen=True)
class Rewrite:
    """One field the demo changed, for the start-up report."""

    file: str
    subject: str
    field: str
    old: str
    new: str


@dataclass(frozen=True)
class DemoRoute:
    """A route of the rewritten config, as the traffic driver and the summary need it."""

    name: str
    path: str
    canary_group: str | None


Record = Callable[[str, object, object], None]

ALERTING_KINDS = ("Receiver", "AlertRouting")
REMOVED = "removed: the demo sends no notifications (events are in the server log)"


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def _checks(spec: CommentedMap, kind: str) -> list[tuple[int, CommentedMap]]:
    found = spec.get(kind) or []
    return [(i, c) for i, c in enumerate(found) if isinstance(c, CommentedMap)]


class _Rewriter:
    """Applies the rules of the module docstring to one document at a time."""

    def __init__(self, backends: DemoBackends) -> None:
        self.backends = backends
        self.routes: list[DemoRoute] = []

    def canary(self, spec: CommentedMap, record: Record) -> None:
        # A heartbeat canary has no schedule: its job's pings set its pace.
        if "heartbeat" not in spec and spec.get("schedule") != DEMO_SCHEDULE:
            record("spec.schedule", spec.get("schedule"), DEMO_SCHEDULE)
            spec["schedule"] = SingleQuotedScalarString(DEMO_SCHEDULE)
        for i, check in _checks(spec, "http"):
            url = str(check.get("url", ""))
            if url and not _is_loopback(url):
                new, service = self.backends.http_url(url)
                record(f"spec.http[{i}].url", url, f"{new} ({service})")
                check["url"] = new
        for i, check in _checks(spec, "tcp"):
            endpoint = str(check.get("endpoint", ""))
            if endpoint and not _is_loopback(f"tcp://{endpoint}"):
                new = self.backends.tcp_endpoint(endpoint)
                record(f"spec.tcp[{i}].endpoint", endpoint, new)
                check["endpoint"] = new
        for i, check in _checks(spec, "tls"):
            self._tls(i, check, record)
        for i, check in _checks(spec, "dns"):
            self._dns(i, check, record)

    def _tls(self, index: int, check: CommentedMap, record: Record) -> None:
        endpoint = str(check.get("endpoint", ""))
        host = endpoint.rpartition(":")[0].strip("[]")
        if not host or host in LOOPBACK_HOSTS:
            return
        name = str(check.get("serverName") or host)
        new = self.backends.tls_endpoint(endpoint, name)
        record(f"spec.tls[{index}].endpoint", endpoint, f"{new} (certificate for {name})")
        check["endpoint"] = new
        if "serverName" not in check:
            record(f"spec.tls[{index}].serverName", None, name)
            check["serverName"] = name

    def _dns(self, index: int, check: CommentedMap, record: Record) -> None:
        query, rdtype = str(check.get("query", "")), str(check.get("querytype") or "A")
        answers = [str(a) for a in check.get("exactreply") or DEFAULT_DNS_ANSWERS.get(rdtype, [])]
        if query:
            self.backends.dns.add(query, rdtype, answers)
        host, port = "127.0.0.1", self.backends.dns.port
        old = f"{check.get('server') or 'the system resolver'}:{check.get('port', 53)}"
        record(f"spec.dns[{index}].server", old, f"{host}:{port} (answers {', '.join(answers)})")
        check["server"], check["port"] = host, port

    def route(self, name: str, spec: CommentedMap, prefix: str, record: Record) -> None:
        for group in spec.get("traffic_split") or []:
            for i, backend in enumerate(group.get("backends") or []):
                url = str(backend.get("url", ""))
                if url and not _is_loopback(url):
                    local = self.backends.route_backend(name, str(group.get("name")), url)
                    field = f"{prefix}traffic_split[{group.get('name')}].backends[{i}].url"
                    record(field, url, f"{local.url}/ ({local.name})")
                    backend["url"] = f"{local.url}/"
        canary = spec.get("canary")
        if isinstance(canary, CommentedMap):
            self._timing(canary, prefix, record)
        group = canary.get("canary_group") if isinstance(canary, CommentedMap) else None
        self.routes.append(DemoRoute(name, str(spec.get("path", "/")), group))

    def _timing(self, canary: CommentedMap, prefix: str, record: Record) -> None:
        for i, step in enumerate(canary.get("steps") or []):
            if step.get("pause") is not None and step.get("pause") != DEMO_PAUSE:
                record(f"{prefix}canary.steps[{i}].pause", step["pause"], DEMO_PAUSE)
                step["pause"] = DEMO_PAUSE
        analysis = canary.get("analysis")
        if not isinstance(analysis, CommentedMap):
            return
        if analysis.get("interval", "30s") != DEMO_INTERVAL:
            record(f"{prefix}canary.analysis.interval", analysis.get("interval"), DEMO_INTERVAL)
            analysis["interval"] = DEMO_INTERVAL
        if int(analysis.get("min_requests") or 0) > DEMO_MIN_REQUESTS:
            record(
                f"{prefix}canary.analysis.min_requests",
                analysis["min_requests"],
                DEMO_MIN_REQUESTS,
            )
            analysis["min_requests"] = DEMO_MIN_REQUESTS


def _subject(data: dict[str, Any]) -> str | None:
    """`Canary namespace/name`, `Route name`, `routes` (a gateway file) or None to skip."""
    kind, metadata = data.get("kind"), data.get("metadata") or {}
    if kind in ("Canary", "Route") and isinstance(metadata, dict):
        name = metadata.get("name")
        namespace = metadata.get("namespace")
        return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    if "kind" not in data and isinstance(data.get("routes"), list):
        return "routes"
    return None


def _edit(rewriter: _Rewriter, subject: str, record: Record) -> Callable[[CommentedMap], None]:
    def edit(document: CommentedMap) -> None:
        if subject == "routes":
            for i, entry in enumerate(document["routes"]):
                name = str(entry.get("id") or entry.get("name"))
                rewriter.route(name, entry, f"routes[{i}].", record)
        elif subject.startswith("Canary "):
            rewriter.canary(document["spec"], record)
        else:
            rewriter.route(str(document["metadata"]["name"]), document["spec"], "spec.", record)

    return edit


def _text(value: object) -> str:
    return "(unset)" if value is None else str(value)


def _rewrite_segment(
    body: str, relative: str, subject: str, rewriter: _Rewriter
) -> tuple[str, list[Rewrite]]:
    found: list[Rewrite] = []

    def record(field: str, old: object, new: object) -> None:
        found.append(Rewrite(relative, subject, field, _text(old), _text(new)))

    return edit_document(body, _edit(rewriter, subject, record)), found


def rewrite_config(root: Path, backends: DemoBackends) -> tuple[list[Rewrite], list[DemoRoute]]:
    """Rewrite every Canary and Route under `root` in place for the local backends.

    Returns:
        Every changed field, and the routes (name, path, canary group).
    """
    rewriter = _Rewriter(backends)
    changes: list[Rewrite] = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(root).as_posix()
        if not is_config_path(relative):
            continue
        segments = split_documents(path.read_text())
        changed = False
        for segment in segments:
            try:
                data = yaml.load(segment.body, Loader=yaml.CSafeLoader)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and data.get("kind") in ALERTING_KINDS:
                name = (data.get("metadata") or {}).get("name")
                changes.append(
                    Rewrite(
                        relative, f"{data['kind']} {name}", "(document)", "(as written)", REMOVED
                    )
                )
                segment.marker = segment.body = ""
                changed = True
                continue
            subject = _subject(data) if isinstance(data, dict) else None
            if subject is None:
                continue
            body, found = _rewrite_segment(segment.body, relative, subject, rewriter)
            if found:
                segment.body, changed = body, True
                changes += found
        if changed:
            path.write_text("".join(segment.text for segment in segments))
    return changes, rewriter.routes
