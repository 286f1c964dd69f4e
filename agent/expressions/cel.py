"""CEL `test` and `display` expressions, evaluated as canary-checker evaluates them.

cel-python gives the CEL core. canary-checker's environment (flanksource/gomplate) adds
functions and syntax its published expressions use; the ones filled in here are
`Duration('7d')`, `m.keys()`, the cel-go string extensions (`charAt`, `lowerAscii`, ...)
and optional field selection `x.?f.orValue(d)`, which is rewritten before parsing because
cel-python's grammar has no `.?`. `check_expression` compiles without evaluating and names
undeclared variables and unknown functions, so the loader can refuse what can never run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator, base_functions

from agent.expressions.celfast import compile_tree
from agent.expressions.celfuncs import FUNCTIONS, Optional, to_python
from agent.expressions.celparser import install_cached_parser

_MAX_REASON = 300
# Compiled expressions kept per process: an agent evaluates the same few expressions every
# run, and compiling one again costs 1-2 ms; beyond this many distinct ones the oldest go.
_KEPT = 2048
_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one"})
_BUILTIN_NAMES = frozenset({"has", "dyn", "optional"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CelError(Exception):
    """A test expression failed to compile, failed to evaluate or gave the wrong type."""


def _skip_string(expr: str, start: int) -> int:
    """The index just after the string literal starting at `start`."""
    quote = expr[start]
    triple = expr[start : start + 3] == quote * 3
    end_mark = quote * 3 if triple else quote
    position = start + len(end_mark)
    while position < len(expr):
        if expr[position] == "\\":
            position += 2
            continue
        if expr.startswith(end_mark, position):
            return position + len(end_mark)
        position += 1
    return len(expr)


def _operand_start(expr: str, end: int) -> int:
    """Where the postfix operand ending at `end` (exclusive) starts."""
    position = end
    while position > 0:
        char = expr[position - 1]
        if char in ")]":
            depth, position = 0, position - 1
            opening = "(" if char == ")" else "["
            while position >= 0:
                if expr[position] == char:
                    depth += 1
                elif expr[position] == opening:
                    depth -= 1
                    if depth == 0:
                        break
                position -= 1
            continue
        if char.isalnum() or char in "_.":
            position -= 1
            continue
        break
    return position


def rewrite_optional(expr: str) -> str:
    """Rewrite `x.?a.b` into `_optional(x, ['a', 'b'])`: cel-python cannot parse `.?`.

    Plain `.f` selections after a `.?f` stay inside the optional chain, as in cel-go, so a
    missing field anywhere in it gives an empty optional; `.orValue(d)` and `.hasValue()`
    then work on it.
    """
    while True:
        position, found = 0, -1
        while position < len(expr) - 1:
            char = expr[position]
            if char in "'\"":
                position = _skip_string(expr, position)
                continue
            if expr.startswith(".?", position):
                found = position
                break
            position += 1
        if found < 0:
            return expr
        start = _operand_start(expr, found)
        operand = expr[start:found]
        fields: list[str] = []
        position = found
        while True:
            optional = expr.startswith(".?", position)
            offset = 2 if optional else 1
            if not (optional or expr.startswith(".", position)):
                break
            match = _IDENT.match(expr, position + offset)
            if match is None:
                break
            after = match.end()
            if not optional and after < len(expr) and expr[after] == "(":
                break  # a method call such as .orValue(...) ends the chain
            fields.append(match.group(0))
            position = after
        listed = ", ".join(repr(field) for field in fields)
        expr = f"{expr[:start]}_optional({operand}, [{listed}]){expr[position:]}"


class _Runner(celpy.InterpretedRunner):
    """cel-python's interpreter, with the base activation built once per program and the
    everyday expressions compiled to closures (`celfast`).

    cel-python builds the base activation again on every evaluation (its type annotations
    loaded into a fresh name container: a quarter of the cost of `code == 200`); every
    interpreted evaluation still gets its own copy with the variables loaded, so evaluations
    share nothing. A compiled program that meets something it does not handle, or whose
    value is an error, hands the evaluation to the interpreter, whose answer is the one given.
    """

    def __init__(
        self,
        environment: celpy.Environment,
        ast: lark.Tree[Any],
        functions: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(environment, ast, functions)
        self._base = self.new_activation()
        self.fast = compile_tree(ast, self._base.functions, self._interpret)

    def _interpret(self, tree: lark.Tree[Any], context: Mapping[str, Any] | None = None) -> Any:
        return Evaluator(ast=tree, activation=self._base).evaluate(context)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        if self.fast is not None:
            try:
                value = self.fast(context)
            except Exception:  # Unsupported, or a function failing: the interpreter decides
                value = None
            if value is not None and not isinstance(value, CELEvalError):
                return value
        return self._interpret(self.ast, context)


@lru_cache(maxsize=1)
def _environment() -> celpy.Environment:
    install_cached_parser()  # ~8 ms from the cache instead of ~0.1 s building it
    return celpy.Environment(runner_class=_Runner)


def _functions() -> dict[str, Callable[..., Any]]:
    return dict(FUNCTIONS)


@lru_cache(maxsize=_KEPT)
def _compile(expr: str) -> lark.Tree[Any]:
    try:
        return _environment().compile(rewrite_optional(expr))
    except Exception as error:  # the parser raises CELParseError, lark errors and more
        raise CelError(f"CEL expression does not compile: {_reason(error)}") from error


# Grammar rules that, with one child, only pass its value on: `code == 200` parses into
# twenty nodes, most of them these, and the interpreter pays a method call and a list for each.
_PASS_THROUGH = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary"}
)


def _pruned(tree: lark.Tree[Any]) -> lark.Tree[Any]:
    """A copy of `tree` with the one-child pass-through nodes left out.

    No interpreter method looks at what kind of node such a child is (the operators look
    at their `relation_eq`-like left node, `member` at its `primary`, the macros search for
    `ident` nodes, none of which is left out), so the value is the same, with a third of
    the nodes to visit.
    """
    while tree.data in _PASS_THROUGH and len(tree.children) == 1:
        [child] = tree.children
        if not isinstance(child, lark.Tree):
            break
        tree = child
    children = [_pruned(c) if isinstance(c, lark.Tree) else c for c in tree.children]
    return type(tree)(tree.data, children, tree.meta)


@lru_cache(maxsize=_KEPT)
def _program(expr: str) -> celpy.Runner:
    return _environment().program(_pruned(_compile(expr)), functions=_functions())


def _reason(error: Exception) -> str:
    first = str(error.args[0]) if error.args else str(error)
    lines = first.splitlines()
    caret = next((line for line in lines[1:] if line.strip() == "^"), None)
    if caret is not None:
        first = f"syntax error at column {caret.index('^') + 1} of {lines[0].strip()!r}"
    first = first.split(" (in activation", 1)[0].strip()
    return first if len(first) <= _MAX_REASON else first[:_MAX_REASON] + "…"


def _names(tree: lark.Tree[Any], bound: frozenset[str]) -> Iterable[tuple[str, str]]:
    """(kind, name) of every variable and function an expression tree refers to."""
    if tree.data == "ident" and tree.children:
        name = str(tree.children[0])
        if name not in bound:
            yield ("variable", name)
        return
    if tree.data == "ident_arg":
        yield ("function", str(tree.children[0]))
    if tree.data == "member_dot_arg":
        member, method = tree.children[0], str(tree.children[1])
        arguments = tree.children[2] if len(tree.children) > 2 else None
        if isinstance(member, lark.Tree):
            yield from _names(member, bound)
        yield ("function", method)
        if isinstance(arguments, lark.Tree):
            inner = bound
            expressions = [c for c in arguments.children if isinstance(c, lark.Tree)]
            if method in _MACROS and expressions:
                variable = next(expressions[0].find_data("ident"), None)
                if variable is not None and variable.children:
                    inner = bound | {str(variable.children[0])}
                expressions = expressions[1:]
            for expression in expressions:
                yield from _names(expression, inner)
        return
    for child in tree.children:
        if isinstance(child, lark.Tree):
            yield from _names(child, bound)


@lru_cache(maxsize=_KEPT)
def free_variables(expr: str) -> frozenset[str]:
    """The variables an expression reads, so a check builds only those (a `code == 200`
    test then costs no header map or JSON conversion).

    Raises:
        CelError: the expression does not compile.
    """
    return frozenset(
        name for kind, name in _names(_compile(expr), frozenset()) if kind == "variable"
    )


def reads(variable: str, *exprs: str | None) -> bool:
    """Whether any of `exprs` reads `variable` (one that does not compile counts as reading
    it: it fails when evaluated anyway)."""
    for expr in exprs:
        try:
            if expr is not None and variable in free_variables(expr):
                return True
        except CelError:
            return True
    return False


def check_expression(expr: str, variables: Iterable[str]) -> str | None:
    """Compile an expression and look for names it can never resolve.

    Args:
        expr: The CEL source, as written.
        variables: The variables the expression will be evaluated with.

    Returns:
        None when the expression compiles and refers only to known names, else why not.
    """
    try:
        tree = _compile(expr)
    except CelError as error:
        return str(error)
    known_functions = set(base_functions) | set(FUNCTIONS) | _MACROS | _BUILTIN_NAMES
    declared = frozenset(variables)
    for kind, name in _names(tree, frozenset()):
        if kind == "variable" and name not in declared:
            shown = ", ".join(sorted(declared)) or "none"
            return f"undeclared reference to {name!r} (variables: {shown})"
        if kind == "function" and name not in known_functions:
            return f"unknown function {name!r}"
    return None


def value_of(expr: str, context: dict[str, Any]) -> Any:
    """The value of `expr` with these variables (an Optional unwrapped).

    Raises:
        CelError: the expression does not compile or fails.
    """
    program = _program(expr)
    try:
        value = program.evaluate(context)
    except Exception as error:  # CELEvalError, or a Python error inside a CEL function
        raise CelError(f"CEL expression failed: {_reason(error)}") from error
    if isinstance(value, CELEvalError):
        raise CelError(f"CEL expression failed: {_reason(value)}")
    return value.value if isinstance(value, Optional) else value


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
    value = value_of(expr, context)
    if not isinstance(value, celtypes.BoolType):
        shown = repr(value)[:_MAX_REASON]
        raise CelError(f"CEL expression gave {type(value).__name__} {shown}, not a bool")
    return bool(value)


def display(expr: str, context: dict[str, Any]) -> str:
    """Evaluate a display expression into the result's message.

    Raises:
        CelError: the expression does not compile or fails.
    """
    value = value_of(expr, context)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.BoolType):
        return "true" if value else "false"
    plain = to_python(value)
    return json.dumps(plain, default=str) if isinstance(plain, (dict, list)) else str(plain)
