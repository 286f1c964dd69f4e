"""CEL tests evaluate to what canary-checker gives whatever shape they take (everyday tests
run as compiled closures, the rest through the interpreter, which skips pass-through nodes;
each check builds only the variables its expression reads), and a compiled test gives the
interpreter's value, leaving every error to the interpreter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent.expressions.cel import CelError, display, evaluate, free_variables
from agent.expressions.celvars import check_context, http_context

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


# Everyday tests the closure compiler takes on, with values of every kind, errors that a
# `&&`/`||` absorbs and errors that reach the result.
COMPILED = [
    "code == 200",
    "code != 200 || content == 'ok body'",
    "code >= 200 && code < 300 && elapsed < duration('1s')",
    "code > 199.5",
    "code in [200, 201] && 'healthy' in [json.status]",
    "json.status == 'healthy' && json.nested.n == 5",
    "json.missing == 1",
    "json.missing == 1 || true",
    "false && json.missing == 1",
    "json.missing.deeper == 1 && true",
    "code == 'two hundred'",
    "headers['Content-Type'] == 'application/json' && headers['X-TRACE'] == 'a, b'",
    "headers['Absent'] == 'x'",
    "'Content-Type' in headers",
    "content.contains('ok') && content.startsWith('ok') && !content.endsWith('x')",
    "content.contains(json.status)",
    "content.matches('^ok')",
    "size(json.hits) == 3 && json.hits.size() == 3 && json.hits[1] == 2",
    "json.hits[7] == 1",
    "json.hits[0] == json.nested.n",
    "check.name == 'health' && canary.name == 'shop'",
    "string(code) == '200'",
    "int('12') == 12 && double(code) == 200.0",
    "json.status.lowerAscii() == 'healthy'",
    "content.nosuchmethod()",
    "nosuchvariable == 1",
    "(code + 1) * 2 == 402 && code - 100 == 100 && code % 7 == 4 && code / 2 == 100",
    "1.5 * 2.0 == 3.0 && 'a' + content == 'aok body' && [1] + [2] == [1, 2]",
    "code / 0 == 1",
    "false && code / 0 == 1",
    "code % 0 == 1 || true",
    "9223372036854775807 + 1 > 0",
    "-code < 0 && -(-code) == code && !(code == 201) && !!true",
    "!code",
    "-content == ''",
    "code == 200 ? true : false",
    "code == 200 ? json.status : json.missing",
    "code != 200 ? json.missing : content",
    "json.missing ? 1 : 2",
    "(code ? 1 : 2) == 1",
    "has(json.status) && !has(json.missing) && has(json.nested.n) && !has(json.absent.n)",
    "has(headers.Location) || has(check.name)",
    "has(content.x)",
    "json.hits.exists(h, h == 3)",
]


@pytest.mark.parametrize("expr", COMPILED)
def test_compiled_expressions_answer_as_the_interpreter(expr: str) -> None:
    from agent.expressions.cel import _program
    from agent.expressions.celfast import Unsupported

    runner = _program(expr)
    built = context(expr) if "nosuch" not in expr else context("code == 1")
    try:
        expected: Any = runner._interpret(runner.ast, built)
    except Exception:
        expected = "error"
    try:
        got: Any = runner.evaluate(built)  # the agent's way: compiled, else interpreted
    except Exception:
        got = "error"
    assert type(got) is type(expected) and got == expected
    # Only macros and unknown methods are left to the interpreter here.
    assert (runner.fast is None) == ("exists" in expr or "nosuchmethod" in expr)
    if runner.fast is not None and expected != "error":
        try:
            value = runner.fast(built)
        except Unsupported:  # a field of a string: the interpreter's to answer
            assert expr == "has(content.x)"
            return
        assert type(value) is type(expected) and value == expected
