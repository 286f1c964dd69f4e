"""CEL test expressions of HTTP checks, compiled once and evaluated per response."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

_MAX_REASON = 300


class CelError(Exception):
    """A test expression failed to compile, failed to evaluate or gave no bool."""


@lru_cache(maxsize=1)
def _environment() -> celpy.Environment:
    return celpy.Environment()


@lru_cache(maxsize=512)
def _program(expr: str) -> celpy.Runner:
    environment = _environment()
    try:
        return environment.program(environment.compile(expr))
    except Exception as error:  # the parser raises CELParseError, lark errors and more
        raise CelError(f"CEL expression does not compile: {_reason(error)}") from error


def _reason(error: Exception) -> str:
    first = str(error.args[0]) if error.args else str(error)
    first = first.split(" (in activation", 1)[0].strip()
    return first if len(first) <= _MAX_REASON else first[:_MAX_REASON] + "…"


def http_context(
    code: int, headers: dict[str, str], content: str, body: Any, elapsed: timedelta
) -> dict[str, Any]:
    """The variables a test expression sees.

    Args:
        code: The HTTP status code.
        headers: Lower-cased header names and their (comma-joined) values.
        content: The body as text.
        body: The parsed JSON body, or None when the body is not JSON.
        elapsed: How long the request took.

    Returns:
        The CEL activation: `code`, `headers`, `content`, `json` and `elapsed`.
    """
    return {
        "code": celtypes.IntType(code),
        "headers": json_to_cel(headers),
        "content": celtypes.StringType(content),
        "json": None if body is None else json_to_cel(body),
        "elapsed": celtypes.DurationType(elapsed),
    }


def evaluate(expr: str, context: dict[str, Any]) -> bool:
    """Evaluate a test expression.

    Args:
        expr: The CEL source.
        context: The variables, as built by `http_context`.

    Returns:
        The expression's value.

    Raises:
        CelError: the expression does not compile, fails, or is not a bool.
    """
    program = _program(expr)
    try:
        value = program.evaluate(context)
    except Exception as error:  # CELEvalError, or a Python error inside a CEL function
        raise CelError(f"CEL expression failed: {_reason(error)}") from error
    if isinstance(value, CELEvalError):
        raise CelError(f"CEL expression failed: {_reason(value)}")
    if not isinstance(value, celtypes.BoolType):
        shown = repr(value)[:_MAX_REASON]
        raise CelError(f"CEL expression gave {type(value).__name__} {shown}, not a bool")
    return bool(value)
