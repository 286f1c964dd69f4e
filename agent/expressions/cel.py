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
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, Evaluator, base_functions

from agent.expressions.celfast import compile_tree
from agent.expressions.celfuncs import FUNCTIONS, Optional, to_python
from agent.expressions.celparser import install_cached_parser

_MAX_REASON = 300
# Compiled expressions kept per process: an agent evaluates the same few expressions every
# run, and compiling one again costs 1-2 ms; beyond this many distinct ones the oldest go.
_KEPT = 2048
HTTP_VARIABLES = frozenset(
    {"code", "headers", "content", "json", "elapsed", "sslAge", "check", "canary"}
)
TCP_VARIABLES = frozenset({"elapsed", "check", "canary"})
ICMP_VARIABLES = frozenset(
    {"elapsed", "packetsSent", "packetsReceived", "packetLoss", "rtt", "check", "canary"}
)
GRPC_VARIABLES = frozenset({"status", "code", "elapsed", "check", "canary"})
_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one"})
_BUILTIN_NAMES = frozenset({"has", "dyn", "optional"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CelError(Exception):
    """A test expression failed to compile, failed to evaluate or gave the wrong type."""


class HeaderMap(celtypes.MapType):
    """Response headers under Go's canonical names (`Location`, `Content-Type`), as
    canary-checker's Go client holds them; lookups ignore case."""

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        joined: dict[str, str] = {}
        for name, value in headers:
            key = canonical_header(name)
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        super().__init__(
            {celtypes.StringType(k): celtypes.StringType(v) for k, v in joined.items()}
        )

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            key = celtypes.StringType(canonical_header(key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            key = celtypes.StringType(canonical_header(key))
        return super().__contains__(key)


def canonical_header(name: str) -> str:
    """Go's canonical form of a header name: `content-type` -> `Content-Type`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


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


def _without_credentials(url: str) -> str:
    """A URL without `user:password@`, as canary-checker reports endpoints."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def check_context(
    check: Mapping[str, Any], wanted: Collection[str] | None = None
) -> dict[str, Any]:
    """The `check` and `canary` variables of a served check (only those in `wanted`, when
    given)."""
    context: dict[str, Any] = {}
    if wanted is None or "check" in wanted:
        endpoint = check.get("url") or check.get("endpoint") or ""
        context["check"] = json_to_cel(
            {
                "name": check.get("name", ""),
                "description": check.get("description", ""),
                "labels": check.get("labels") or {},
                "endpoint": _without_credentials(endpoint),
            }
        )
    if wanted is None or "canary" in wanted:
        canary = check.get("canary") if isinstance(check.get("canary"), Mapping) else {}
        context["canary"] = json_to_cel(
            {"name": "", "namespace": "", "labels": {}, **(canary or {})}
        )
    return context


_INT64 = range(-(2**63), 2**63)


def _json_cel(document: Any) -> Any:
    if isinstance(document, bool):
        return celtypes.BoolType(document)
    if isinstance(document, int):
        if document in _INT64:
            return celtypes.IntType(document)
        return celtypes.DoubleType(float(document))
    if isinstance(document, float):
        return celtypes.DoubleType(document)
    if isinstance(document, str):
        return celtypes.StringType(document)
    if document is None:
        return None
    if isinstance(document, list):
        return celtypes.ListType([_json_cel(item) for item in document])
    if isinstance(document, dict):
        return celtypes.MapType({celtypes.StringType(k): _json_cel(v) for k, v in document.items()})
    raise TypeError(f"{type(document).__name__} is not a JSON value")


def json_value(document: Any) -> Any:
    """A parsed JSON body as CEL values.

    canary-checker reads a body with Go's encoding/json, where every number is a float64:
    an integer beyond CEL's 64 bits becomes a double here rather than failing the run.

    Raises:
        CelError: the body cannot be given to CEL (nested too deeply, a number too large
            even for a double).
    """
    try:
        return _json_cel(document)
    except RecursionError:
        raise CelError("CEL cannot read the JSON body: it is nested too deeply") from None
    except OverflowError:
        raise CelError(
            "CEL cannot read the JSON body: it holds an integer too large for a double"
        ) from None
    except (TypeError, ValueError) as error:
        raise CelError(f"CEL cannot read the JSON body: {_reason(error)}") from error


def http_context(
    code: int,
    headers: Iterable[tuple[str, str]],
    content: str,
    body: Any,
    elapsed: timedelta,
    ssl_age: timedelta | None = None,
    wanted: Collection[str] | None = None,
) -> dict[str, Any]:
    """The variables a test or display expression of an HTTP check sees.

    Args:
        code: The HTTP status code.
        headers: Header names as sent and their values; repeated names are joined.
        content: The body as text.
        body: The parsed JSON body, or None when the body is not JSON (then `json` is {}).
            It is converted only when `json` is wanted.
        elapsed: How long the request took.
        ssl_age: Time left until the certificate expires (zero without TLS).
        wanted: Build only these variables (`free_variables` of the expression); all when
            None.

    Returns:
        The CEL activation: `code`, `headers`, `content`, `json`, `elapsed`, `sslAge`.

    Raises:
        CelError: `json` is wanted and the body cannot be given to CEL (`json_value`).
    """
    builders: dict[str, Callable[[], Any]] = {
        "code": lambda: celtypes.IntType(code),
        "headers": lambda: HeaderMap(headers),
        "content": lambda: celtypes.StringType(content),
        "json": lambda: json_value({} if body is None else body),
        "elapsed": lambda: celtypes.DurationType(elapsed),
        "sslAge": lambda: celtypes.DurationType(ssl_age or timedelta(0)),
    }
    return {name: build() for name, build in builders.items() if wanted is None or name in wanted}


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
