"""Validated documents that remember their source, and the loaded configuration."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from reconciler.core.diagnostics import Diagnostic, FieldPath, Severity, format_field
from reconciler.core.yamlparse import locate
from schemas.agent import AgentDocument
from schemas.alerting import AlertRoutingDocument, ReceiverDocument
from schemas.base import StrictModel
from schemas.canary import CanaryDocument
from schemas.maintenance import MaintenanceDocument
from schemas.region import RegionDocument
from schemas.route import RouteDocument

M = TypeVar("M", bound=StrictModel)

NAMESPACED_KINDS = frozenset({"Canary"})


class UnreadableFile(Exception):
    """A source refused to read a file: not a regular file inside the repository, or too
    large. The message says why in words and never holds the file's contents."""


@dataclass(frozen=True)
class SourceFile:
    """A YAML file of the config repository; `read` fetches its bytes only when needed
    (and raises `UnreadableFile` when the source refuses to read them).

    A file under a hidden directory or with a hidden name has the blob `HIDDEN`: never read,
    it is named in a notice so that it is not left out without a word."""

    path: str
    blob: str
    read: Callable[[], bytes]

    @property
    def hidden(self) -> bool:
        """A YAML file with a hidden path, listed only to be reported as left out."""
        return self.blob == HIDDEN


# The blob of a hidden YAML file (`SourceFile.hidden`).
HIDDEN = "hidden"


def shown_path(path: str) -> str:
    """A file name as text that every output can carry (JSON, a plan file, a PR comment):
    bytes of the name that are not UTF-8, which the system hands over as surrogates, are
    written `\\xe9`."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return path


def document_key(kind: str, namespace: str, name: str) -> str:
    """The identity of a document within its kind: `namespace/name` or just `name`."""
    return f"{namespace}/{name}" if kind in NAMESPACED_KINDS else name


@dataclass(frozen=True)
class Located(Generic[M]):
    """A validated document with the raw YAML it came from, to point errors at lines."""

    model: M
    kind: str
    path: str
    raw: Any
    # Where the document sits inside `raw`; a gateway file's route i is ('routes', i).
    raw_prefix: FieldPath = ()

    @property
    def key(self) -> str:
        metadata = self.model.metadata  # type: ignore[attr-defined]
        return document_key(self.kind, metadata.namespace, metadata.name)

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.key}"

    def file_field(self, field_path: FieldPath) -> FieldPath:
        """Translate a document field path into the path as written in the file."""
        if not self.raw_prefix:
            return field_path
        if field_path[:1] == ("spec",):
            return self.raw_prefix + field_path[1:]
        if field_path == ("metadata", "name"):
            return (*self.raw_prefix, "id")
        return self.raw_prefix

    def location(self) -> str:
        """`path:line` of the document's start."""
        line, _ = locate(self.raw, self.raw_prefix) or (1, 1)
        return f"{self.path}:{line}"

    def diagnostic(
        self, field_path: FieldPath, message: str, severity: Severity = "error"
    ) -> Diagnostic:
        """A diagnostic about one field of this document, at the line it was written."""
        in_file = self.file_field(field_path)
        line, column = locate(self.raw, in_file) or (1, 1)
        return Diagnostic(
            self.path, line, column, self.subject, format_field(in_file), message, severity
        )


@dataclass(frozen=True)
class Config:
    """Every valid document of one revision of the config repository, by key."""

    regions: dict[str, Located[RegionDocument]] = field(default_factory=dict)
    agents: dict[str, Located[AgentDocument]] = field(default_factory=dict)
    canaries: dict[str, Located[CanaryDocument]] = field(default_factory=dict)
    routes: dict[str, Located[RouteDocument]] = field(default_factory=dict)
    maintenance: dict[str, Located[MaintenanceDocument]] = field(default_factory=dict)
    receivers: dict[str, Located[ReceiverDocument]] = field(default_factory=dict)
    alert_routing: dict[str, Located[AlertRoutingDocument]] = field(default_factory=dict)
    # How files were read (gateway sections not read, files left out): nothing to fix.
    notices: list[Diagnostic] = field(default_factory=list)

    def by_kind(self) -> dict[str, dict[str, Located[Any]]]:
        """Each kind's table of documents, by the kind's name."""
        return {
            "Region": self.regions,
            "Agent": self.agents,
            "Canary": self.canaries,
            "Route": self.routes,
            "Receiver": self.receivers,
            "AlertRouting": self.alert_routing,
            "Maintenance": self.maintenance,
        }

    @property
    def documents(self) -> int:
        """How many documents were read, of every kind."""
        return sum(len(table) for table in self.by_kind().values())


def git_blob_sha(content: bytes) -> str:
    """The SHA git gives a blob with this content, so disk and git files share cache keys."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % len(content))
    digest.update(content)
    return digest.hexdigest()
