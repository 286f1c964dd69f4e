"""Expressions tried on sample values of what a check sees: type errors found at validate time.

cel-python has no type checker, so `code == '200'` (an int compared with a string) or
`content + 1` compiles, and then fails on every run of the check, which a user finds out from
the site rather than from `validate`. Evaluating an expression once on sample values of its
check's variables finds such mistakes without a type checker, and is only trusted where the
answer cannot depend on the values:

* "no matching overload" (an operator applied to types it does not take) depends only on
  the operands' types. The variables have fixed types (`code` is always an int, `content`
  a string); only `json` is whatever the body held, so an expression reading it is tried with
  a JSON object, a list, a string and a number, and reported only when each fails the same way.
* a `test` that gives something other than a boolean on every sample.

Every other failure (a missing key, a division by zero, a string that is not a number) depends
on what the target answers, and is left to the run. A branch the samples do not take is not
looked into: this finds some mistakes, and never reports a good expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel

from agent.expressions.cel import CelError, free_variables, value_of
from agent.expressions.celvars import (
    check_context,
    grpc_context,
    http_context,
    icmp_context,
    tcp_context,
)

_ELAPSED_MS = 120.0
# What each check type's expressions see on a run, built by the agent's own builders with
# sample values (types are what matters).
_SAMPLES: dict[str, dict[str, Any]] = {
    "http": http_context(200, [], "", None, timedelta(milliseconds=_ELAPSED_MS)),
    "tcp": tcp_context(timedelta(milliseconds=_ELAPSED_MS)),
    "icmp": icmp_context(
        {"packets_sent": 3, "packets_received": 3, "packet_loss_percent": 0.0}, _ELAPSED_MS
    ),
    "grpc": grpc_context("SERVING", _ELAPSED_MS),
}
# `json` is the body as parsed, of any JSON type (an object when the body is not JSON).
_JSON_SAMPLES: tuple[dict[str, Any] | list[Any] | str | int, ...] = ({}, [], "", 0)
_OVERLOAD = re.compile(r"found no matching overload for '?([^']+?)'? applied to '\((.*)\)'")
_OPERATORS = {
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "unary_not": "!",
    "unary_neg": "-",
    "_?_:_": "? :",
}
_TYPE_NAME = re.compile(r"<class '(?:[\w.]+\.)?(\w+?)(?:Type)?'>")
_CEL_TYPES = {"NoneType": "null", "Map": "map", "List": "list"}


def sample_problem(expr: str, check_type: str, boolean: bool) -> str | None:
    """Why `expr` cannot work on any run of a `check_type` check (`boolean`: it is a `test`,
    which must give true or false); None when the samples find nothing.

    The expression must compile and name only its check's variables (`check_expression`).
    """
    base = _SAMPLES.get(check_type)
    if base is None:
        return None
    wanted = free_variables(expr)
    context = {**base, **check_context({}, wanted)}
    samples = [context]
    if "json" in wanted and check_type == "http":
        samples = [{**context, "json": json_to_cel(value)} for value in _JSON_SAMPLES]
    overloads: list[str] = []
    others: list[str] = []
    for sample in samples:
        try:
            value = value_of(expr, sample)
        except CelError as error:
            match = _OVERLOAD.search(str(error))
            if match is None or "CELEvalError" in match.group(2):
                # Depends on the values (an operand that failed, a missing key, a division
                # by zero): left to the run.
                return None
            overloads.append(_overload(match))
            continue
        if isinstance(value, celtypes.BoolType) or not boolean:
            return None
        others.append(_kind(value))
    if overloads and not others and len(set(overloads)) == 1:
        return f"this can never evaluate: {overloads[0]}"
    if others and not overloads and len(set(others)) == 1:
        return f"a test must give true or false; this gives {others[0]}"
    return None


def _overload(match: re.Match[str]) -> str:
    operator = _OPERATORS.get(match.group(1), match.group(1))
    types = ", ".join(_type_name(name) for name in _TYPE_NAME.findall(match.group(2)))
    return f"'{operator}' cannot be applied to ({types})"


def _type_name(name: str) -> str:
    return _CEL_TYPES.get(name, name.lower())


def _kind(value: Any) -> str:
    """How a CEL value is named in a message: its type (`a string`, `an int`)."""
    name = _type_name(type(value).__name__.removesuffix("Type"))
    if isinstance(value, Mapping):
        name = "map"
    return f"an {name}" if name[0] in "aeio" else f"a {name}"
