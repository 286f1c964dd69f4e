"""Edit Region and Agent documents of a config working tree, keeping comments and layout."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from reconciler.core.documents import SourceFile
from reconciler.core.plan import Revision
from reconciler.core.yamlparse import parse_yaml
from reconciler.session import Session
from reconciler.sources.gitrepo import GitLocation, GitSourceError, files_at
from reconciler.sources.worktree import git_blob_sha, read_worktree
from schemas.base import API_VERSION

KIND_DIRECTORY = {"Region": "regions", "Agent": "agents"}
SCHEMA_FILE = {"Region": "region.json", "Agent": "agent.json"}

# A document starts at `---` (or ends at `...`) written at the start of a line; YAML forbids
# both inside scalars, so cutting the text there agrees with every parser.
_BOUNDARY = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
_BARE_MARKER = re.compile(r"---[ \t]*(?:#[^\n]*)?(?:\n|$)")


class EditRefused(Exception):
    """An edit that cannot be made: the HTTP status, what is wrong, and details."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


# -- segments of a YAML stream -----------------------------------------------------------------


@dataclass
class Segment:
    """One document of a file as written: its bare `---` line (or '') and the text after it."""

    marker: str
    body: str

    @property
    def text(self) -> str:
        """The segment as written in the file."""
        return self.marker + self.body


def split_documents(text: str) -> list[Segment]:
    """Cut a YAML stream into one segment per document marker.

    Args:
        text: the whole file.

    Returns:
        The segments in order; joining their `text` gives back `text` exactly. A segment's
        leading comments stay with it; the first segment holds the file's header comments.
    """
    starts = [m.start() for m in _BOUNDARY.finditer(text) if m.start() > 0]
    bounds = [0, *starts, len(text)]
    segments = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        chunk = text[start:end]
        marker = _BARE_MARKER.match(chunk) if start > 0 or chunk.startswith("---") else None
        if marker is not None:
            segments.append(Segment(chunk[: marker.end()], chunk[marker.end() :]))
        else:
            segments.append(Segment("", chunk))
    return segments


def _parse_segment(body: str) -> dict[str, Any] | None:
    """The plain data of a segment's single document, or None (comments only, not a mapping,
    or not parseable)."""
    parsed = parse_yaml(body.encode())
    documents = [d for d in parsed.documents if d is not None]
    if parsed.problems or len(documents) != 1 or not isinstance(documents[0], dict):
        return None
    document: dict[str, Any] = documents[0]
    return document


def _guess_indent(body: str) -> tuple[int, int, int]:
    """Mapping indent, sequence indent and dash offset as written in `body`."""
    mapping, offset = 0, -1
    previous = ""
    for line in body.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if not mapping and indent and not stripped.startswith("-"):
            mapping = indent
        if offset < 0 and stripped.startswith("- ") and previous.rstrip().endswith(":"):
            offset = indent - (len(previous) - len(previous.lstrip(" ")))
        previous = line
    mapping = mapping or 2
    offset = 2 if offset < 0 else offset
    return mapping, max(offset + 2, mapping), offset


def _round_trip(body: str) -> YAML:
    processor = YAML(typ="rt")
    processor.preserve_quotes = True
    processor.width = 4096
    mapping, sequence, offset = _guess_indent(body)
    processor.indent(mapping=mapping, sequence=sequence, offset=offset)
    processor.explicit_start = body.lstrip().startswith("---")
    return processor


def _dump(processor: YAML, data: Any) -> str:
    out = io.StringIO()
    processor.dump(data, out)
    return out.getvalue()


def safe_scalar(value: str) -> str:
    """A string that every YAML reader reads back as this same string.

    ruamel writes YAML 1.2, where `yes` or `on` are plain strings; the loader (PyYAML, YAML
    1.1) would read booleans, so values it would misread are quoted.
    """
    try:
        read_back = yaml.load(value, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        read_back = None
    return value if read_back == value else SingleQuotedScalarString(value)


def edit_document(body: str, edit: Callable[[CommentedMap], None]) -> str:
    """Apply `edit` to the document in `body` with a round trip that keeps its comments.

    Args:
        body: one document's text (no leading `---` line).
        edit: changes the loaded mapping in place.

    Returns:
        The document's new text.
    """
    processor = _round_trip(body)
    try:
        data = processor.load(body)
    except YAMLError as error:
        raise EditRefused(422, f"cannot edit this document's YAML: {error}") from error
    if not isinstance(data, CommentedMap):
        raise EditRefused(422, "the document is not a mapping")
    edit(data)
    text = _dump(processor, data)
    return text.replace("\n", "\r\n") if "\r\n" in body else text


def _last_comment(node: Any) -> tuple[CommentedMap, Any] | None:
    """The mapping and key holding the comment written after a node's last line."""
    if not isinstance(node, CommentedMap) or not node:
        return None
    key = list(node)[-1]
    return _last_comment(node[key]) or (node, key)


def _comment_of(mapping: CommentedMap, key: Any) -> CommentToken | None:
    entry = mapping.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    return token if isinstance(token, CommentToken) else None


def _split_comment(token: CommentToken | None) -> tuple[str, str]:
    """A comment token's end-of-line part and the full lines after it."""
    if token is None:
        return "", ""
    own, newline, following = token.value.partition("\n")
    return own + newline, following


def remove_key(
    mapping: CommentedMap, key: Any, parent: tuple[CommentedMap, Any] | None = None
) -> None:
    """Delete a key with the comment lines written above it, keeping those below it.

    ruamel stores the comment lines between two entries on the entry before them (or, above
    a nested mapping's first entry, on the parent's entry), so a plain `del` would drop the
    comments about the next entry and keep those about the deleted one.

    Args:
        mapping: the mapping to delete from.
        key: the key.
        parent: the mapping and key holding `mapping`, to keep comments when the first entry
            goes.
    """
    keys = list(mapping)
    position = keys.index(key)
    holder = _last_comment(mapping[key]) or (mapping, key)
    _, following = _split_comment(_comment_of(*holder))
    del mapping[key]
    if position > 0:
        target = _last_comment(mapping[keys[position - 1]]) or (mapping, keys[position - 1])
        existing = _comment_of(*target)
        own, _ = _split_comment(existing)
        if existing is not None and (own.strip() or following.strip()):
            existing.value = (own or "\n") + following
        elif existing is not None:
            del target[0].ca.items[target[1]]
        elif following.strip():
            comment = CommentToken("\n" + following, CommentMark(0))
            target[0].ca.items[target[1]] = [None, None, comment, None]
    elif parent is not None:
        entry = parent[0].ca.items.setdefault(parent[1], [None, None, None, None])
        while len(entry) < 4:
            entry.append(None)
        entry[3] = [CommentToken(following, CommentMark(0))] if following.strip() else None
        mapping.ca.comment = None


def _set_mapping(parent: CommentedMap, key: str, values: Mapping[str, str]) -> None:
    """Make `parent[key]` equal to `values`, updating an existing mapping in place."""
    current = parent.get(key)
    if not isinstance(current, CommentedMap):
        mapping = CommentedMap((safe_scalar(k), safe_scalar(v)) for k, v in values.items())
        mapping.fa.set_flow_style()
        parent[key] = mapping
        return
    for old in [k for k in current if k not in values]:
        remove_key(current, old, (parent, key))
    for name, value in values.items():
        if current.get(name) != value:
            current[safe_scalar(name) if name not in current else name] = safe_scalar(value)


def _spec(document: CommentedMap) -> CommentedMap:
    spec = document.get("spec")
    if not isinstance(spec, CommentedMap):
        spec = CommentedMap()
        document["spec"] = spec
    return spec


def apply_fields(document: CommentedMap, fields: Mapping[str, Any]) -> None:
    """Set spec fields (`None` removes one; a dict replaces a mapping) and `name`."""
    for key, value in fields.items():
        if key == "name":
            document["metadata"]["name"] = safe_scalar(value)
            continue
        spec = _spec(document)
        if value is None:
            if key in spec:
                remove_key(spec, key, (document, "spec"))
        elif isinstance(value, dict):
            _set_mapping(spec, key, value)
        elif isinstance(value, str):
            spec[key] = safe_scalar(value)
        else:
            spec[key] = value


def new_document(kind: str, name: str, spec: Mapping[str, Any], schema: str | None) -> str:
    """The text of a new document, with the editor's schema line when one is given."""
    document = CommentedMap()
    document["apiVersion"] = API_VERSION
    document["kind"] = kind
    document["metadata"] = CommentedMap(name=safe_scalar(name))
    if spec:
        document["spec"] = CommentedMap()
        apply_fields(document, spec)
    processor = YAML(typ="rt")
    processor.width = 4096
    processor.indent(mapping=2, sequence=4, offset=2)
    header = f"# yaml-language-server: $schema={schema}\n" if schema else ""
    return header + _dump(processor, document)


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
                data = _parse_segment(segment.body)
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
        if not any(_parse_segment(s.body) is not None for s in segments):
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
        raise EditRefused(404, f"{kind.lower()} {name} is not in the configuration")
    return found


def _refuse_duplicate(tree: ConfigTree, kind: str, name: str) -> None:
    found = tree.find(kind, name)
    if found is not None:
        raise EditRefused(409, f"{kind.lower()} {name} already exists (in {found.path})")


def _require_region(tree: ConfigTree, region: str) -> None:
    if tree.find("Region", region) is None:
        known = ", ".join(tree.names("Region")) or "none defined"
        message = f"region {region!r} does not exist (regions: {known})"
        raise EditRefused(422, message, errors=[f"region: {message}"])


def _document_count(tree: ConfigTree, path: str) -> int:
    text = tree.text(path) or ""
    return sum(1 for s in split_documents(text) if _parse_segment(s.body) is not None)


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
        EditRefused: 409 when a region of that name exists.
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
        EditRefused: 404 for an unknown region, 409 when the new name is taken or the region
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
            raise EditRefused(
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
        EditRefused: 404 for an unknown region, 409 while agents or canaries use it.
    """
    ref = _existing(tree, "Region", name)
    agents = sorted(
        str(_name_of(a.data)) for a in tree.documents("Agent", name) if a.spec.get("region") == name
    )
    if agents or canaries:
        raise EditRefused(
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
        EditRefused: 409 when an agent of that name exists, 422 for an unknown region.
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
        EditRefused: 404 for an unknown agent, 409 when the new name is taken, 422 for an
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
        EditRefused: 404 for an unknown agent.
    """
    tree.remove(_existing(tree, "Agent", name))
    return Edited(f"operator: delete agent {name}", "Agent", name)


# -- the working tree on disk --------------------------------------------------------------------


def config_root(location: GitLocation) -> Path:
    """The config directory of a working tree."""
    top = Path(location.repo.working_tree_dir or ".")
    return top / location.subdirectory if location.subdirectory else top


def read_tree(root: Path) -> ConfigTree:
    """The config files of a directory, ready to edit."""
    return ConfigTree({f.path: f.read() for f in read_worktree(root)})


def schema_reference(root: Path, top: Path, path: str, kind: str) -> str | None:
    """The `$schema` path of a new file, relative to it, when the JSON Schema is reachable.

    Looks for `schemas/jsonschema/<kind>.json` in the config directory and each parent up to
    the repository's top, as the sample repository's files do.
    """
    directory = (root / path).parent.resolve()
    candidate, top = root.resolve(), top.resolve()
    while True:
        schema = candidate / "schemas" / "jsonschema" / SCHEMA_FILE[kind]
        if schema.is_file():
            return Path(os.path.relpath(schema, directory)).as_posix()
        if candidate == top or candidate.parent == candidate:
            return None
        candidate = candidate.parent


def uncommitted(location: GitLocation, tree: ConfigTree, paths: list[str]) -> list[str]:
    """The paths whose working-tree content differs from HEAD (someone's unsaved work)."""
    try:
        head_files, _ = files_at(location, "HEAD")
    except GitSourceError:
        head_files = []
    head = {f.path: f.blob for f in head_files}
    dirty = []
    for path in paths:
        content = tree.original.get(path)
        if head.get(path) != (git_blob_sha(content) if content is not None else None):
            dirty.append(path)
    return dirty


@dataclass(frozen=True)
class Validation:
    """What loading the edited config found."""

    errors: list[str]
    warnings: list[str]


def validate(session: Session, tree: ConfigTree) -> Validation:
    """Load and compile the edited tree as the control plane would."""
    loaded = session.load_files(tree.source_files(), Revision(None, None, None, None))
    return Validation(
        [d.format() for d in loaded.diagnostics if d.severity == "error"],
        [d.format() for d in loaded.diagnostics if d.severity == "warning"],
    )


def write_tree(root: Path, changes: Mapping[str, bytes | None]) -> list[Path]:
    """Write (atomically, file by file) or delete the changed files; returns their paths."""
    written = []
    for path, content in changes.items():
        target = root / path
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.operator-tmp")
            temporary.write_bytes(content)
            os.replace(temporary, target)
        written.append(target)
    return written


def restore_tree(root: Path, tree: ConfigTree, changes: Mapping[str, bytes | None]) -> None:
    """Put back the files an edit changed, as they were before it."""
    for path in changes:
        target = root / path
        original = tree.original.get(path)
        if original is None:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(original)
