"""Fast YAML parsing that remembers where every key and list item was written."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.core.diagnostics import FieldPath, format_field
from schemas.limits import (
    MAX_ALIASES,
    MAX_DOCUMENTS_PER_FILE,
    MAX_EXPANDED_NODES,
    MAX_FILE_BYTES,
    MAX_INTEGER,
    MAX_NESTING_DEPTH,
    MAX_STRING_CHARS,
    MIN_INTEGER,
    limit_hint,
)

Position = tuple[int, int]  # 1-based line and column


class PositionedMap(dict[Any, Any]):
    """A mapping that knows the position of itself and of each of its keys."""

    __slots__ = ("start", "positions", "explicit")

    def __init__(self, start: Position) -> None:
        super().__init__()
        self.start = start
        self.positions: dict[Any, Position] = {}
        self.explicit: set[Any] = set()  # keys written here, not merged in with '<<'


class PositionedList(list[Any]):
    """A sequence that knows the position of itself and of each of its items."""

    __slots__ = ("start", "positions")

    def __init__(self, start: Position) -> None:
        super().__init__()
        self.start = start
        self.positions: list[Position] = []


@dataclass(frozen=True)
class YamlProblem:
    """A syntax error, a duplicate key or a limit exceeded, with where it is."""

    line: int
    column: int
    message: str
    field: str = ""
    document: int | None = None  # index in `ParsedYaml.documents` of the document it is in


def _character_at(content: bytes, line: int, column: int) -> str:
    """The character at a 1-based line and column of `content` ("" past its end)."""
    lines = content.split(b"\n", line)
    if line > len(lines):
        return ""
    text = lines[line - 1].decode("utf-8", errors="replace")
    return text[column - 1] if 0 < column <= len(text) else ""


def _unreadable(content: bytes, error: yaml.reader.ReaderError) -> YamlProblem:
    """A reader's error (bytes that are not UTF-8, a control character) at its line and
    column: libyaml gives the byte offset only, and its own text ("unacceptable character
    #x-001") names neither."""
    offset = min(max(int(error.position), 0), len(content))
    line, column = _line_column(content, offset)
    if error.encoding == "unicode" or (
        isinstance(error.character, int) and error.character >= 0 and "control" in error.reason
    ):
        message = (
            f"a control character (U+{int(error.character):04X}) YAML does not allow; write it "
            "as an escape in a double-quoted string"
        )
    else:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as undecodable:  # libyaml names the byte after a cut sequence
            offset = undecodable.start
            line, column = _line_column(content, offset)
        message = (
            f"the file is not UTF-8 text (byte 0x{content[offset]:02X} here): save it as UTF-8"
            if offset < len(content)
            else f"the file is not UTF-8 text ({error.reason}): save it as UTF-8"
        )
    return YamlProblem(line, column, message)


def _line_column(content: bytes, offset: int) -> Position:
    """The 1-based line and column (in characters) of a byte offset of `content`."""
    start = content.rfind(b"\n", 0, offset) + 1
    column = len(content[start:offset].decode("utf-8", errors="replace")) + 1
    return content.count(b"\n", 0, offset) + 1, column


def _position(node: yaml.Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.CSafeLoader):
    """libyaml's parser with constructors that record positions and reject duplicate keys."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.problems: list[YamlProblem] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> PositionedMap:
    explicit = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged = len(node.value) - explicit  # flatten_mapping puts merged pairs first
    mapping = PositionedMap(_position(node))
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        where = _position(key_node)
        try:
            hash(key)
        except TypeError:
            loader.problems.append(YamlProblem(*where, "a mapping key must be a plain value"))
            continue
        if key in mapping.positions and (index >= merged and key in mapping.explicit):
            first = mapping.positions[key][0]
            loader.problems.append(
                YamlProblem(*where, f"duplicate key {key!r} (first set on line {first})")
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.positions[key] = where
        if index >= merged:
            mapping.explicit.add(key)
    return mapping


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> PositionedList:
    sequence = PositionedList(_position(node))
    for item in node.value:
        sequence.append(loader.construct_object(item, deep=True))
        sequence.positions.append(_position(item))
    return sequence


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
# More digits than this cannot fit 64 bits whatever the base; converting them could be slow.
_MAX_INT_TEXT = 80
# Values out of range reported one by one per file; the rest are counted in one problem.
MAX_VALUE_PROBLEMS = 100


def _shortened(path: FieldPath) -> str:
    """A field path for a message; a path 64 levels deep is shown by its two ends."""
    text = format_field(path)
    return text if len(text) <= 80 else f"{text[:38]}...{text[-38:]}"


def _children(node: yaml.Node) -> Iterable[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return itertools.chain.from_iterable(node.value)
    return node.value if isinstance(node, yaml.SequenceNode) else ()


def _paths_to(root: yaml.Node, targets: Iterable[yaml.Node]) -> dict[int, FieldPath]:
    """Where each target is first reached from `root`, by node id, in one walk: run only
    when a problem is reported, so the walk that measures every node builds no paths."""
    wanted = {id(target) for target in targets}
    found: dict[int, FieldPath] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, FieldPath]] = [(root, ())]
    while stack and len(found) < len(wanted):
        node, path = stack.pop()
        if id(node) in wanted:
            found.setdefault(id(node), path)
        if id(node) in seen or len(path) > MAX_NESTING_DEPTH:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in reversed(node.value):
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                stack.append((value_node, (*path, str(name)[:40])))
                stack.append((key_node, path))
    return found


class _Guard:
    """Measures a composed document before anything is built from it.

    libyaml composes an alias as a second reference to the anchored node, so a billion-laughs
    file composes in microseconds; it is everything after (constructing, validating,
    fingerprinting) that would walk the expansion. Sizes and heights are memoised per node, so
    the walk is linear in the file while it measures the file as if every alias were written
    out. The recursion stops at the nesting limit, far below Python's own. Scalars, most of
    the nodes, are checked inline: this walk runs on every file the loader parses.
    """

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.nodes = 0  # expanded, over the whole file
        self.aliases = 0
        self.values: list[YamlProblem] = []  # values out of range, each reported
        self.unreported = 0  # values out of range beyond MAX_VALUE_PROBLEMS, counted
        self._failed: tuple[yaml.Node, str] | None = None
        self._bad_values: list[tuple[yaml.Node, str]] = []
        self._measured: dict[int, tuple[int, int]] = {}  # node id -> (expanded size, height)
        self._open: set[int] = set()

    def check(self, root: yaml.Node, document: int) -> YamlProblem | None:
        """The first file limit the document exceeds, or None; counts carry over to the
        next document. Values out of range are added to `values` and the walk goes on."""
        self._failed = None
        self._bad_values = []
        # Anchors do not cross documents, and the ids of a finished document's nodes are reused.
        self._measured = {}
        self._open = set()
        if isinstance(root, yaml.ScalarNode):
            self.nodes += 1
            self._scalar(root)
        else:
            self._collection(root, 1)
        if self._failed is None and self.nodes > MAX_EXPANDED_NODES:
            self._expansion(root)
        self._report_values(root, document)
        if self._failed is None:
            return None
        node, message = self._failed
        line, column = _position(node)
        path = _paths_to(root, [node]).get(id(node), ())
        return YamlProblem(line, column, message, _shortened(path))

    def _report_values(self, root: yaml.Node, document: int) -> None:
        # A scalar used through several aliases is reported once.
        bad = list({id(node): (node, message) for node, message in self._bad_values}.values())
        room = max(0, MAX_VALUE_PROBLEMS - len(self.values))
        paths = _paths_to(root, [node for node, _ in bad[:room]])
        for node, message in bad[:room]:
            line, column = _position(node)
            path = _shortened(paths.get(id(node), ()))
            self.values.append(YamlProblem(line, column, message, path, document))
        self.unreported += len(bad[room:])

    def _fail(self, node: yaml.Node, message: str) -> tuple[int, int]:
        if self._failed is None:
            self._failed = (node, message)
        return (0, 0)

    def _expansion(self, node: yaml.Node) -> None:
        self._fail(
            node,
            f"the file expands to more than {MAX_EXPANDED_NODES} YAML nodes with its aliases "
            "written out (an alias bomb?); "
            + limit_hint("expanded nodes per file", MAX_EXPANDED_NODES),
        )

    def _too_deep(self, node: yaml.Node) -> tuple[int, int]:
        return self._fail(
            node,
            f"nested deeper than {MAX_NESTING_DEPTH} levels; "
            + limit_hint("nesting depth", MAX_NESTING_DEPTH),
        )

    def _collection(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_NESTING_DEPTH:
            return self._too_deep(node)
        key = id(node)
        self._open.add(key)
        measured = self._measured
        size, height, written = 1, 0, 1
        for child in _children(node):
            if type(child) is yaml.ScalarNode:
                size += 1
                written += 1
                if child.tag != _STR_TAG or len(child.value) > MAX_STRING_CHARS:
                    self._scalar(child)
                continue
            known = measured.get(id(child))
            if known is None:
                if id(child) in self._open:
                    return self._fail(child, "an alias refers to a node that contains it")
                known = self._collection(child, depth + 1)
                if self._failed is not None:
                    return (0, 0)
            else:
                self.aliases += 1
                self.nodes += known[0]
                if depth + known[1] > MAX_NESTING_DEPTH:
                    return self._too_deep(child)
                if self.aliases > MAX_ALIASES:
                    return self._fail(
                        child,
                        f"more than {MAX_ALIASES} alias uses in the file; "
                        + limit_hint("aliases per file", MAX_ALIASES),
                    )
                if self.nodes > MAX_EXPANDED_NODES:
                    self._expansion(child)
                    return (0, 0)
            size += known[0]
            height = max(height, known[1])
        self._open.discard(key)
        self.nodes += written
        result = (size, height + 1)
        measured[key] = result
        return result

    def _scalar(self, node: yaml.ScalarNode) -> None:
        text = node.value
        shown = text if len(text) <= 40 else text[:37] + "..."
        if len(text) > MAX_STRING_CHARS:
            message = (
                f"a value of {len(text)} characters is longer than {MAX_STRING_CHARS}; "
                + limit_hint("string length", MAX_STRING_CHARS)
            )
            self._bad_values.append((node, message))
        elif node.tag == _INT_TAG:
            value: int | None = None
            if len(text) <= _MAX_INT_TEXT:
                try:
                    value = self.loader.construct_yaml_int(node)
                except ValueError:
                    self._bad_values.append((node, f"{shown!r} is not a valid !!int"))
                    return
            if value is None or not MIN_INTEGER <= value <= MAX_INTEGER:
                message = (
                    f"integer {shown} is out of range: allowed {MIN_INTEGER} to {MAX_INTEGER} "
                    "(64-bit); " + limit_hint("integer range", "64-bit signed")
                )
                self._bad_values.append((node, message))
        elif node.tag != _STR_TAG:
            # `!!float abc` or a timestamp with month 13: the constructors raise plain Python
            # errors that would escape as a traceback when the document is built.
            construct = self.loader.yaml_constructors.get(node.tag)
            if construct is None:
                return  # an unknown tag: building the document reports it
            try:
                construct(self.loader, node)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                tag = str(node.tag).rsplit(":", 1)[-1]
                self._bad_values.append((node, f"{shown!r} is not a valid !!{tag}"))


@dataclass(frozen=True)
class ParsedYaml:
    """The documents of one file (None for empty ones) and the problems found."""

    documents: list[Any]
    problems: list[YamlProblem]
    # Where each document's value begins (a scalar or list document has no other place).
    starts: list[Position] = field(default_factory=list)


def parse_yaml(content: bytes) -> ParsedYaml:
    """Parse every document of a YAML stream, keeping key and item positions.

    Args:
        content: the file's bytes.

    Returns:
        The documents in order and any syntax or duplicate-key problems. After a syntax
        error the documents parsed before it are returned.
    """
    if len(content) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES} bytes; " + limit_hint(
            "file size", f"{MAX_FILE_BYTES} bytes"
        )
        return ParsedYaml([], [YamlProblem(1, 1, message)])
    loader = _Loader(content)
    guard = _Guard(loader)
    documents: list[Any] = []
    starts: list[Position] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            if len(documents) == MAX_DOCUMENTS_PER_FILE:
                line, column = _position(node)
                message = (
                    f"more than {MAX_DOCUMENTS_PER_FILE} documents in the file; "
                    + limit_hint("documents per file", MAX_DOCUMENTS_PER_FILE)
                )
                loader.problems.append(YamlProblem(line, column, message))
                break
            problem = guard.check(node, len(documents))
            if problem is not None:
                # Nothing is built from a document over a limit, nor from the rest of the file.
                loader.problems.append(problem)
                break
            # Out-of-range values are reported, and the document is still built so its other
            # errors are reported too; a load with errors is never compiled or stored.
            starts.append(_position(node))
            try:
                documents.append(loader.construct_document(node))
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
                # A value its tag's constructor refused; the guard has named it, or else the
                # document's start is named (a plain error carries no position).
                if not any(p.document == len(documents) for p in guard.values):
                    line, column = _position(node)
                    message = f"invalid YAML: a value does not match its tag ({error})"
                    loader.problems.append(YamlProblem(line, column, message))
                documents.append(None)  # keeps later problems' document indexes right
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(part) for part in (error.context, error.problem) if part)
        if _character_at(content, line, column) == "\t" and "tab" not in message:
            message += " (a tab: YAML indents with spaces only)"
        loader.problems.append(YamlProblem(line, column, f"invalid YAML: {message}"))
    except yaml.reader.ReaderError as error:
        loader.problems.append(_unreadable(content, error))
    except yaml.YAMLError as error:
        loader.problems.append(YamlProblem(1, 1, f"invalid YAML: {error}"))
    finally:
        loader.dispose()
    if guard.unreported:
        message = (
            f"and {guard.unreported} more value(s) out of range "
            f"(the first {MAX_VALUE_PROBLEMS} are listed)"
        )
        last = guard.values[-1]  # listed after it
        loader.problems.append(YamlProblem(last.line, last.column + 1, message))
    # A document whose construction failed outright (a MarkedYAMLError) was never added.
    return ParsedYaml(documents, loader.problems + guard.values, starts[: len(documents)])


def locate(document: Any, path: tuple[str | int, ...]) -> Position | None:
    """The position of the deepest part of `path` that exists in a parsed document."""
    best: Position | None = getattr(document, "start", None)
    node = document
    for part in path:
        if isinstance(node, PositionedMap) and part in node:
            best = node.positions.get(part, best)
            node = node[part]
        elif isinstance(node, PositionedList) and isinstance(part, int) and part < len(node):
            best = node.positions[part]
            node = node[part]
        else:
            break
    return best
