"""The operator's edits of Regions and Agents, as rules over a tree of config files.

Pure: the tree holds file contents in memory; `server/operator_edits.py` reads it from the
working tree, validates, writes and commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap

from reconciler.core.documents import SourceFile, git_blob_sha
from reconciler.core.refusal import RequestRefused
from reconciler.core.yaml_edit import (
    Segment,
    apply_fields,
    edit_document,
    new_document,
    parse_segment,
    split_documents,
)

KIND_DIRECTORY = {"Region": "regions", "Agent": "agents", "Maintenance": "maintenance"}
SCHEMA_FILE = {"Region": "region.json", "Agent": "agent.json", "Maintenance": "maintenance.json"}

# -- the tree being edited ---------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRef:
    """Where a document is: its file, its segment index there, and its plain data."""

    path: str
    index: int
    data: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        """The document's spec mapping (empty when it has none)."""
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}


def _name_of(data: Mapping[str, Any]) -> Any:
    metadata = data.get("metadata")
    return metadata.get("name") if isinstance(metadata, dict) else None


@dataclass
class ConfigTree:
    """The config files (relative posix path to bytes) and the edits made to them so far."""

    original: dict[str, bytes]
    texts: dict[str, str | None] = field(default_factory=dict)

    def text(self, path: str) -> str | None:
        """A file's current text, None when it does not exist (or is not UTF-8)."""
        if path in self.texts:
            return self.texts[path]
        content = self.original.get(path)
        if content is None:
            return None
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def paths(self) -> list[str]:
        """Every file that exists after the edits so far."""
        present = set(self.original) | {p for p, t in self.texts.items() if t is not None}
        return sorted(p for p in present if self.texts.get(p, "") is not None)

    def documents(self, kind: str, hint: str | None = None) -> Iterator[DocumentRef]:
        """Every document of a kind, in path order; `hint` skips files that do not contain it."""
        for path in self.paths():
            text = self.text(path)
            if text is None or kind not in text or (hint is not None and hint not in text):
                continue
            for index, segment in enumerate(split_documents(text)):
                data = parse_segment(segment.body)
                if data is not None and data.get("kind") == kind:
                    yield DocumentRef(path, index, data)

    def find(self, kind: str, name: str) -> DocumentRef | None:
        """The document of a kind with this name, wherever it is."""
        return next((d for d in self.documents(kind, name) if _name_of(d.data) == name), None)

    def names(self, kind: str) -> list[str]:
        """The names of every document of a kind."""
        return sorted(str(_name_of(d.data)) for d in self.documents(kind))

    def _replace(self, path: str, segments: list[Segment]) -> None:
        self.texts[path] = "".join(s.text for s in segments)

    def update(self, ref: DocumentRef, edit: Callable[[CommentedMap], None]) -> None:
        """Edit one document in place; the rest of its file stays byte for byte."""
        text = self.text(ref.path)
        assert text is not None
        segments = split_documents(text)
        segment = segments[ref.index]
        segment.body = edit_document(segment.body, edit)
        self._replace(ref.path, segments)

    def remove(self, ref: DocumentRef) -> None:
        """Delete one document (and the comments written above it, after its `---`).

        The header comments of a file stay when its first document goes; a file left with
        no document is deleted.
        """
        text = self.text(ref.path)
        assert text is not None
        segments = split_documents(text)
        removed = segments.pop(ref.index)
        if ref.index == 0:
            header = "".join(_leading_comments(removed.body))
            if segments and segments[0].marker:
                segments[0].marker = ""
            if header.strip():
                segments.insert(0, Segment("", header))
        if not any(parse_segment(s.body) is not None for s in segments):
            self.texts[ref.path] = None
            return
        self._replace(ref.path, segments)

    def add(
        self, path: str, kind: str, name: str, spec: Mapping[str, Any], schema: str | None
    ) -> None:
        """Add a new document: a new file, or appended to an existing one after `---`."""
        text = self.text(path)
        if text is None or not text.strip():
            self.texts[path] = new_document(kind, name, spec, schema)
            return
        separator = "" if text.endswith("\n") else "\n"
        self.texts[path] = text + separator + "---\n" + new_document(kind, name, spec, None)

    def move(self, old: str, new: str) -> None:
        """Rename a file."""
        self.texts[new] = self.text(old)
        self.texts[old] = None

    def changes(self) -> dict[str, bytes | None]:
        """The files whose content changed: new bytes, or None for a deleted file."""
        changed: dict[str, bytes | None] = {}
        for path, text in self.texts.items():
            content = None if text is None else text.encode("utf-8")
            if content != self.original.get(path):
                changed[path] = content
        return changed

    def source_files(self) -> list[SourceFile]:
        """The tree after the edits, as the loader reads it."""
        files = []
        for path in sorted(set(self.original) | set(self.texts)):
            if path in self.texts:
                text = self.texts[path]
                if text is None:
                    continue
                content = text.encode("utf-8")
            else:
                content = self.original[path]
            files.append(SourceFile(path, git_blob_sha(content), _constant(content)))
        return files


def _constant(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def _leading_comments(body: str) -> list[str]:
    lines = []
    for line in body.splitlines(keepends=True):
        if line.strip() and not line.lstrip().startswith("#"):
            break
        lines.append(line)
    return lines


# -- operations on regions and agents ------------------------------------------------------------


@dataclass(frozen=True)
class Edited:
    """What an edit did: the commit message, and the document's name before and after."""

    message: str
    kind: str
    name: str
    previous: str | None = None


SchemaFor = Callable[[str, str], str | None]


def _existing(tree: ConfigTree, kind: str, name: str) -> DocumentRef:
    found = tree.find(kind, name)
    if found is None:
        raise RequestRefused(404, f"{kind.lower()} {name} is not in the configuration")
    return found


def _refuse_duplicate(tree: ConfigTree, kind: str, name: str) -> None:
    found = tree.find(kind, name)
    if found is not None:
        raise RequestRefused(409, f"{kind.lower()} {name} already exists (in {found.path})")


def _require_region(tree: ConfigTree, region: str) -> None:
    if tree.find("Region", region) is None:
        known = ", ".join(tree.names("Region")) or "none defined"
        message = f"region {region!r} does not exist (regions: {known})"
        raise RequestRefused(422, message, errors=[f"region: {message}"])


def _document_count(tree: ConfigTree, path: str) -> int:
    text = tree.text(path) or ""
    return sum(1 for s in split_documents(text) if parse_segment(s.body) is not None)


def _follow_rename(tree: ConfigTree, path: str, kind: str, old: str, new: str) -> None:
    """Move `<kind dir>/<old>.yaml` to `<new>.yaml` when it holds only the renamed document."""
    directory = KIND_DIRECTORY[kind]
    for suffix in (".yaml", ".yml"):
        target = f"{directory}/{new}{suffix}"
        if path == f"{directory}/{old}{suffix}" and tree.text(target) is None:
            if _document_count(tree, path) == 1:
                tree.move(path, target)
            return


def _new_document_path(kind: str, name: str) -> str:
    return f"{KIND_DIRECTORY[kind]}/{name}.yaml"


def _describe(kind: str, name: str, fields: Mapping[str, Any]) -> list[str]:
    noun = kind.lower()
    clauses = []
    if "name" in fields:
        clauses.append(f"rename {noun} {name} to {fields['name']}")
    for key, value in fields.items():
        if key == "name":
            continue
        if key == "enabled":
            clauses.append(f"{'enable' if value else 'disable'} {noun} {name}")
        elif value is None:
            clauses.append(f"remove {key} of {noun} {name}")
        elif key == "location":
            clauses.append(f"relocate {noun} {name} to {value!r}")
        elif key == "region":
            clauses.append(f"move {noun} {name} to region {value}")
        elif key == "labels":
            labels = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
            clauses.append(f"set labels of {noun} {name} to {labels}")
        else:
            clauses.append(f"set {key} of {noun} {name} to {value!r}")
    return clauses


def _effective(ref: DocumentRef, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that change something (a PATCH repeating current values changes nothing)."""
    current = {"name": _name_of(ref.data), "enabled": True, "labels": {}, **ref.spec}
    return {
        k: v for k, v in fields.items() if not (k in current and current[k] == v) and
        not (v is None and k not in current)
    }  # fmt: skip


def create_region(
    tree: ConfigTree, name: str, fields: Mapping[str, Any], schema_for: SchemaFor
) -> Edited:
    """Add a Region document in `regions/<name>.yaml`.

    Raises:
        RequestRefused: 409 when a region of that name exists.
    """
    _refuse_duplicate(tree, "Region", name)
    path = _new_document_path("Region", name)
    spec = {k: v for k, v in fields.items() if v is not None}
    tree.add(path, "Region", name, spec, schema_for(path, "Region"))
    return Edited(f"operator: create region {name}", "Region", name)


def update_region(
    tree: ConfigTree, name: str, fields: Mapping[str, Any], local_region: str
) -> Edited:
    """Rename, relocate, enable or disable a region; a rename moves its agents along.

    Raises:
        RequestRefused: 404 for an unknown region, 409 when the new name is taken or the region
            is the control plane's own.
    """
    ref = _existing(tree, "Region", name)
    changes = _effective(ref, fields)
    if not changes:
        return Edited("", "Region", name)
    new = str(changes.get("name", name))
    moved: list[str] = []
    if new != name:
        _refuse_duplicate(tree, "Region", new)
        if name == local_region:
            raise RequestRefused(
                409,
                f"region {name} is the control plane's own region (local region setting); "
                "renaming it here would leave the control plane reporting to a region that "
                "is no longer defined — change the setting and the document together instead",
            )
    tree.update(ref, lambda document: apply_fields(document, changes))
    if new != name:
        agents = [a for a in tree.documents("Agent", name) if a.spec.get("region") == name]
        for agent in agents:
            tree.update(agent, lambda document: apply_fields(document, {"region": new}))
            moved.append(str(_name_of(agent.data)))
        _follow_rename(tree, ref.path, "Region", name, new)
    clauses = _describe("Region", name, changes)
    if moved:
        clauses.append(f"move agent{'s' if len(moved) > 1 else ''} {', '.join(moved)} to {new}")
    message = "operator: " + ", ".join(clauses)
    return Edited(message, "Region", new, name if new != name else None)


def delete_region(tree: ConfigTree, name: str, canaries: list[str]) -> Edited:
    """Delete a region that no agent and no canary uses.

    Args:
        tree: the config being edited.
        name: the region.
        canaries: derived canaries currently placed in the region.

    Raises:
        RequestRefused: 404 for an unknown region, 409 while agents or canaries use it.
    """
    ref = _existing(tree, "Region", name)
    agents = sorted(
        str(_name_of(a.data)) for a in tree.documents("Agent", name) if a.spec.get("region") == name
    )
    if agents or canaries:
        raise RequestRefused(
            409,
            f"region {name} is still in use: move or delete its agents first",
            agents=agents,
            canaries=sorted(canaries),
        )
    tree.remove(ref)
    return Edited(f"operator: delete region {name}", "Region", name)


def create_agent(
    tree: ConfigTree, name: str, fields: Mapping[str, Any], schema_for: SchemaFor
) -> Edited:
    """Add an Agent document in `agents/<name>.yaml`.

    Raises:
        RequestRefused: 409 when an agent of that name exists, 422 for an unknown region.
    """
    _refuse_duplicate(tree, "Agent", name)
    region = str(fields["region"])
    _require_region(tree, region)
    spec = {k: v for k, v in fields.items() if v is not None and v != {}}
    path = _new_document_path("Agent", name)
    tree.add(path, "Agent", name, spec, schema_for(path, "Agent"))
    return Edited(f"operator: create agent {name} in {region}", "Agent", name)


def update_agent(tree: ConfigTree, name: str, fields: Mapping[str, Any]) -> Edited:
    """Rename an agent, move it to another region, enable or disable it, set its labels.

    Raises:
        RequestRefused: 404 for an unknown agent, 409 when the new name is taken, 422 for an
            unknown region.
    """
    ref = _existing(tree, "Agent", name)
    changes = _effective(ref, fields)
    if not changes:
        return Edited("", "Agent", name)
    new = str(changes.get("name", name))
    if new != name:
        _refuse_duplicate(tree, "Agent", new)
    if "region" in changes:
        _require_region(tree, str(changes["region"]))
    tree.update(ref, lambda document: apply_fields(document, changes))
    if new != name:
        _follow_rename(tree, ref.path, "Agent", name, new)
    clauses = _describe("Agent", name, changes)
    message = "operator: " + ", ".join(clauses)
    return Edited(message, "Agent", new, name if new != name else None)


def delete_agent(tree: ConfigTree, name: str) -> Edited:
    """Delete an agent's document.

    Raises:
        RequestRefused: 404 for an unknown agent.
    """
    tree.remove(_existing(tree, "Agent", name))
    return Edited(f"operator: delete agent {name}", "Agent", name)
