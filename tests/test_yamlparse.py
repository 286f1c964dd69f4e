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


def test_bytes_that_are_not_utf8_are_named_at_their_line_and_column() -> None:
    # A file saved as Latin-1: "café" is "caf" and one byte 0xE9.
    [problem] = parse_yaml(b"metadata:\n  name: caf\xe9\n").problems
    assert (problem.line, problem.column) == (2, 12)
    assert problem.message == "the file is not UTF-8 text (byte 0xE9 here): save it as UTF-8"
    # A multi-byte sequence cut short is named where it starts, not at the byte after it.
    [problem] = parse_yaml(b"a: \xe2\x82\nb: 1\n").problems
    assert (problem.line, problem.column) == (1, 4)


def test_a_control_character_is_named_at_its_line_and_column() -> None:
    [problem] = parse_yaml(b"a: 1\nb: ring\x07\n").problems
    assert (problem.line, problem.column) == (2, 8)
    assert problem.message.startswith("a control character (U+0007) YAML does not allow")


def test_a_tab_in_the_indentation_is_called_a_tab() -> None:
    [problem] = parse_yaml(b"spec:\n\tschedule: x\n").problems
    assert (problem.line, problem.column) == (2, 1)
    assert problem.message.endswith("(a tab: YAML indents with spaces only)")


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    import time
    import tracemalloc

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    tracemalloc.start()
    started = time.perf_counter()
    parsed = parse_yaml("\n".join(lines).encode())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.documents == []
    [problem] = parsed.problems
    assert "expanded nodes per file" in problem.message
    assert "schemas/limits.py" in problem.message
    assert elapsed < 0.5
    assert peak < 5_000_000


def test_values_out_of_range_are_each_reported_at_their_line() -> None:
    parsed = parse_yaml(b"a: 1\nb: 9223372036854775808\nc: [x, -9223372036854775809]\n")
    assert [(p.line, p.field) for p in parsed.problems] == [(2, "b"), (3, "c[1]")]
    assert all("64-bit" in p.message for p in parsed.problems)
    assert {p.document for p in parsed.problems} == {0}
    assert parsed.documents[0]["b"] == 9223372036854775808, "still built: its other errors show"
    assert parse_yaml(b"a: 9223372036854775807\nb: -9223372036854775808\n").problems == []


def test_nesting_deeper_than_the_limit_is_a_problem_not_a_recursion_error() -> None:
    parsed = parse_yaml(b"a: " + b"[" * 900 + b"]" * 900)
    [problem] = parsed.problems
    assert "nesting depth" in problem.message
    assert parse_yaml(b"a: " + b"[" * 60 + b"]" * 60).problems == []


def test_every_document_is_measured_on_its_own() -> None:
    text = "---\n".join("a: {b: [{c: 9223372036854775808}]}\n" for _ in range(50))
    parsed = parse_yaml(text.encode())
    assert [p.line for p in parsed.problems] == [2 * i + 1 for i in range(50)]
    assert {p.field for p in parsed.problems} == {"a.b[0].c"}
