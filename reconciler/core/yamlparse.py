"""Fast YAML parsing that remembers where every key and list item was written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

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
    """A syntax error or a duplicate key, with where it is."""

    line: int
    column: int
    message: str


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


@dataclass(frozen=True)
class ParsedYaml:
    """The documents of one file (None for empty ones) and the problems found."""

    documents: list[Any]
    problems: list[YamlProblem]


def parse_yaml(content: bytes) -> ParsedYaml:
    """Parse every document of a YAML stream, keeping key and item positions.

    Args:
        content: the file's bytes.

    Returns:
        The documents in order and any syntax or duplicate-key problems. After a syntax
        error the documents parsed before it are returned.
    """
    loader = _Loader(content)
    documents: list[Any] = []
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(part) for part in (error.context, error.problem) if part)
        loader.problems.append(YamlProblem(line, column, f"invalid YAML: {message}"))
    except yaml.YAMLError as error:
        loader.problems.append(YamlProblem(1, 1, f"invalid YAML: {error}"))
    finally:
        loader.dispose()
    return ParsedYaml(documents, loader.problems)


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
