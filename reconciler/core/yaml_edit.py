"""Edits of YAML text that keep comments and layout: split a stream, edit one document."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from reconciler.core.refusal import RequestRefused
from reconciler.core.yamlparse import parse_yaml
from schemas.base import API_VERSION

# A document starts at `---` (or ends at `...`) written at the start of a line; YAML forbids
# both inside scalars, so cutting the text there agrees with every parser.
_BOUNDARY = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
_BARE_MARKER = re.compile(r"---[ \t]*(?:#[^\n]*)?(?:\n|$)")


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


def parse_segment(body: str) -> dict[str, Any] | None:
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
        raise RequestRefused(422, f"cannot edit this document's YAML: {error}") from error
    if not isinstance(data, CommentedMap):
        raise RequestRefused(422, "the document is not a mapping")
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
