"""CEL tests evaluate to what canary-checker gives whatever shape they take (the interpreter
skips pass-through nodes and each check builds only the variables its expression reads), and
a test that reads only `code` builds no header map, JSON value or check variables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent.expressions.cel import (
    CelError,
    check_context,
    display,
    evaluate,
    free_variables,
    http_context,
)

HEADERS = [("content-type", "application/json"), ("x-trace", "a"), ("X-Trace", "b")]
BODY = {"status": "healthy", "hits": [1, 2, 3], "nested": {"n": 5}}
CHECK = {"name": "health", "url": "https://u:p@example.com/x", "canary": {"name": "shop"}}


def context(expr: str) -> dict[str, Any]:
    wanted = free_variables(expr)
    built = http_context(200, HEADERS, "ok body", BODY, timedelta(milliseconds=40), None, wanted)
    return {**built, **check_context(CHECK, wanted)}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("code == 200", True),
        ("!(code == 200)", False),
        ("-code < 0 && code % 7 == 4", True),
        ("(code + 1) * 2 == 402 || false", True),
        ("code == 200 ? json.status == 'healthy' : false", True),
        ("code != 200 ? true : json.hits.size() == 2", False),
        ("has(json.status) && !has(json.missing)", True),
        ("json.hits.map(x, x * 2).exists(y, y == 6)", True),
        ("json.hits.filter(x, x > 1).size() == 2 && json.hits.all(x, x > 0)", True),
        ("json.?nested.n.orValue(0) == 5 && json.?absent.n.orValue(7) == 7", True),
        ("'healthy' in [json.status] && 2 in json.hits", True),
        ("headers['Content-Type'] == 'application/json' && headers['x-trace'] == 'a, b'", True),
        ("content.contains('ok') && content.startsWith('ok')", True),
        ("elapsed < duration('1s') && sslAge == duration('0s')", True),
        ("check.name == 'health' && check.endpoint == 'https://example.com/x'", True),
        ("canary.name == 'shop' && canary.namespace == ''", True),
        ("[code, 1].size() == 2 && {'a': code}['a'] == 200", True),
    ],
)
def test_expressions_of_every_shape_evaluate_as_before(expr: str, expected: bool) -> None:
    assert evaluate(expr, context(expr)) is expected


def test_a_display_sees_the_variables_it_names() -> None:
    expr = "check.name + ': ' + string(json.hits.size()) + ' hits'"
    assert display(expr, context(expr)) == "health: 3 hits"


@pytest.mark.parametrize(
    ("expr", "variables"),
    [
        ("code == 200", {"code"}),
        ("json.hits.exists(h, h == code)", {"json", "code"}),
        ("has(headers.Location) || canary.name == ''", {"headers", "canary"}),
        ("json.?a.b.orValue(content)", {"json", "content"}),
        ("[1, 2].all(x, x > 0)", set()),
    ],
)
def test_only_the_variables_an_expression_reads_are_built(expr: str, variables: set[str]) -> None:
    assert free_variables(expr) == variables
    assert set(context(expr)) == variables


def test_a_variable_left_unbuilt_is_still_reported_missing() -> None:
    with pytest.raises(CelError, match="undeclared|not found|no such"):
        evaluate("nothere == 1", context("nothere == 1"))
