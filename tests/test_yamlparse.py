"""YAML parsing keeps positions of keys and items, and rejects duplicate keys."""

from __future__ import annotations

from reconciler.core.yamlparse import locate, parse_yaml

TEXT = b"""\
a: 1
b:
  - x: 1
    y: [2, 3]
  - plain
---
# an empty document follows
---
c: {d: 4}
"""


def test_documents_and_positions() -> None:
    parsed = parse_yaml(TEXT)
    assert parsed.problems == []
    first, empty, third = parsed.documents
    assert first == {"a": 1, "b": [{"x": 1, "y": [2, 3]}, "plain"]}
    assert empty is None
    assert locate(first, ("a",)) == (1, 1)
    assert locate(first, ("b", 0, "y")) == (4, 5)
    assert locate(first, ("b", 0, "y", 1)) == (4, 12)
    assert locate(first, ("b", 1)) == (5, 5)
    assert locate(third, ("c", "d")) == (9, 5)


def test_locate_stops_at_the_deepest_existing_part() -> None:
    [document] = parse_yaml(b"spec:\n  http:\n    - name: a\n").documents
    assert locate(document, ("spec", "http", 0, "url")) == (3, 7)
    assert locate(document, ("spec", "tcp")) == (1, 1)


def test_duplicate_keys_are_problems() -> None:
    parsed = parse_yaml(b"a: 1\nb:\n  c: 1\n  c: 2\n")
    [problem] = parsed.problems
    assert (problem.line, problem.column) == (4, 3)
    assert problem.message == "duplicate key 'c' (first set on line 3)"


def test_merge_keys_still_work_and_may_be_overridden() -> None:
    parsed = parse_yaml(b"base: &b {x: 1, y: 1}\nitem:\n  <<: *b\n  y: 2\n")
    assert parsed.problems == []
    assert parsed.documents[0]["item"] == {"x": 1, "y": 2}


def test_syntax_error_keeps_earlier_documents_and_names_the_line() -> None:
    parsed = parse_yaml(b"a: 1\n---\nb: [1, 2\nc: 3\n")
    assert parsed.documents == [{"a": 1}]
    [problem] = parsed.problems
    assert problem.message.startswith("invalid YAML:")
    assert problem.line == 4
