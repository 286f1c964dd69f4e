"""A closure compiler for the everyday CEL test, beside cel-python's tree interpreter.

cel-python walks the parse tree on every evaluation through lark's visitor: a method lookup,
a trace wrapper, a list of child values and several `typing` subscriptions per node, about
60 µs for `code == 200` and 130 µs for `code == 200 && content.contains('ok')`, which a
check at 1,000/s pays on every run. Most tests are comparisons, `&&`/`||`, `!`, `? :`,
`has()`, arithmetic, field and index selection, function and method calls and list literals;
this module turns those trees into nested Python closures once, calling the very functions
cel-python calls (`_==_`, `_&&_`, `contains`, ...) with the values it would pass them and
turning the same exceptions into error values, so results are the same by construction.

Anything else (macros, `dyn()`, map literals) is not compiled: `compile_tree` returns
None and the interpreter runs it. At run time a program gives up (`Unsupported`) when a name
is not a variable of the context or a value is not a map where a field is selected; and a
result that is an error is not trusted either. In those cases the caller evaluates with the
interpreter, so errors and their messages stay cel-python's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError

Program = Callable[[Mapping[str, Any]], Any]
Functions = Mapping[str, Callable[..., Any]]

_RELATIONS = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_ge": "_>=_",
    "relation_gt": "_>_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "_in_",
}
# Binary operators: the node holding the left operand, the function, and the exceptions the
# interpreter turns into an error value for that node (any other one propagates, as there).
_BINARY: dict[str, tuple[dict[str, str], tuple[type[Exception], ...]]] = {
    "relation": (_RELATIONS, (TypeError,)),
    "addition": (
        {"addition_add": "_+_", "addition_sub": "_-_"},
        (TypeError, ValueError, OverflowError),
    ),
    "multiplication": (
        {"multiplication_mul": "_*_", "multiplication_div": "_/_", "multiplication_mod": "_%_"},
        (TypeError, ZeroDivisionError, ValueError, OverflowError),
    ),
}
_UNARY = {"unary_not": "!_", "unary_neg": "-_"}
# Method names the interpreter treats as macros, never as functions.
_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one", "reduce", "min"})


class Unsupported(Exception):
    """This evaluation needs the interpreter (an unknown name, a non-map field selection)."""


def _error(reason: str) -> CELEvalError:
    return CELEvalError(reason)


def _binary(
    function: Callable[..., Any],
    left: Program,
    right: Program,
    caught: tuple[type[Exception], ...] = (TypeError,),
) -> Program:
    """Both operands evaluated, then the operator; no short-circuit, as in the interpreter
    (`_&&_` and `_||_` themselves absorb an error on the side that does not matter)."""

    def run(context: Mapping[str, Any]) -> Any:
        a, b = left(context), right(context)
        try:
            return function(a, b)
        except caught:
            return _error("no matching overload")

    return run


def _conditional(
    function: Callable[..., Any], condition: Program, when_true: Program, when_false: Program
) -> Program:
    """`c ? a : b`: only the chosen side is evaluated, as in the interpreter."""
    false = celtypes.BoolType(False)

    def run(context: Mapping[str, Any]) -> Any:
        chosen = condition(context)
        if isinstance(chosen, CELEvalError):
            raise Unsupported("?:")  # what an error's truth is, the interpreter says
        left = right = false
        if chosen:
            left = when_true(context)
        else:
            right = when_false(context)
        try:
            return function(chosen, left, right)
        except TypeError:
            return _error("no matching overload")

    return run


def _has(operand: Program) -> Program:
    """`has(e.f)`: true when the selection evaluates, whatever its value."""

    def run(context: Mapping[str, Any]) -> Any:
        return celtypes.BoolType(not isinstance(operand(context), CELEvalError))

    return run


def _unary(function: Callable[..., Any], operand: Program) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        try:
            return function(operand(context))
        except (TypeError, ValueError):
            return _error("no matching overload")

    return run


def _ident(name: str) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        try:
            return context[name]
        except KeyError:
            raise Unsupported(name) from None

    return run


def _field(member: Program, name: str) -> Program:
    key = celtypes.StringType(name)

    def run(context: Mapping[str, Any]) -> Any:
        value = member(context)
        if isinstance(value, CELEvalError):
            return value
        if not isinstance(value, celtypes.MapType):
            raise Unsupported(f".{name}")  # messages, name containers: the interpreter's
        try:
            return value[key]
        except KeyError:
            return _error(f"no such member in mapping: {name!r}")

    return run


def _method(function: Callable[..., Any], member: Program, arguments: list[Program]) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        value = member(context)
        values = [argument(context) for argument in arguments]
        if isinstance(value, CELEvalError):
            return value
        for argument in values:
            if isinstance(argument, CELEvalError):
                return argument
        try:
            return function(value, *values)
        except (TypeError, AttributeError, ValueError):
            return _error("no such overload")

    return run


def _index(function: Callable[..., Any], member: Program, index: Program) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        value, key = member(context), index(context)
        try:
            return function(value, key)
        except (TypeError, KeyError, IndexError):
            return _error("no such key")

    return run


def _call(function: Callable[..., Any], arguments: list[Program]) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        values = [argument(context) for argument in arguments]
        for argument in values:
            if isinstance(argument, CELEvalError):
                return argument
        try:
            return function(*values)
        except (TypeError, AttributeError, ValueError):
            return _error("no such overload")

    return run


def _list(items: list[Program]) -> Program:
    def run(context: Mapping[str, Any]) -> Any:
        values = [item(context) for item in items]
        for value in values:
            if isinstance(value, CELEvalError):
                return value
        return celtypes.ListType(values)

    return run


def _constant(value: Any) -> Program:
    return lambda context: value


def compile_tree(
    tree: lark.Tree[Any], functions: Functions, literal: Callable[[lark.Tree[Any]], Any]
) -> Program | None:
    """A closure that evaluates `tree`, or None when it holds something not compiled here.

    Args:
        tree: The parse tree, with the one-child pass-through nodes left out.
        functions: The functions the interpreter resolves operators and methods in.
        literal: Evaluates a `literal` node the interpreter's way (done once, here).
    """

    def build(node: Any) -> Program:
        if not isinstance(node, lark.Tree):
            raise Unsupported("token")
        kind, children = node.data, node.children
        if kind in ("conditionalor", "conditionaland") and len(children) == 2:
            operator = functions["_||_" if kind == "conditionalor" else "_&&_"]
            return _binary(operator, build(children[0]), build(children[1]))
        if kind == "expr" and len(children) == 3:
            condition, when_true, when_false = (build(child) for child in children)
            return _conditional(functions["_?_:_"], condition, when_true, when_false)
        if kind in _BINARY and len(children) == 2:
            operators, caught = _BINARY[kind]
            left_op, right = children
            if not isinstance(left_op, lark.Tree) or left_op.data not in operators:
                raise Unsupported(kind)
            [left] = left_op.children
            function = functions[operators[left_op.data]]
            return _binary(function, build(left), build(right), caught)
        if kind == "unary" and len(children) == 2:
            op_tree, operand = children
            if not isinstance(op_tree, lark.Tree) or op_tree.data not in _UNARY:
                raise Unsupported(kind)
            return _unary(functions[_UNARY[op_tree.data]], build(operand))
        if kind in ("member", "primary", "paren_expr") and len(children) == 1:
            return build(children[0])
        if kind == "literal":
            return _constant(literal(node))
        if kind == "ident" and len(children) == 1:
            return _ident(str(children[0]))
        if kind == "member_dot" and len(children) == 2:
            return _field(build(children[0]), str(children[1]))
        if kind == "member_index" and len(children) == 2:
            return _index(functions["_[_]"], build(children[0]), build(children[1]))
        if kind == "member_dot_arg" and len(children) in (2, 3):
            name = str(children[1])
            if name in _MACROS or name not in functions:
                raise Unsupported(name)
            return _method(functions[name], build(children[0]), build_list(children[2:]))
        if kind == "ident_arg" and len(children) in (1, 2):
            name = str(children[0])
            if name == "has" and len(children) == 2:
                [operand] = build_list(children[1:])
                return _has(operand)
            if name in ("has", "dyn") or name not in functions:
                raise Unsupported(name)  # macros, or an error message for the interpreter
            return _call(functions[name], build_list(children[1:]))
        if kind == "list_lit" and len(children) <= 1:
            return _list(build_list(children))
        raise Unsupported(kind)

    def build_list(children: list[Any]) -> list[Program]:
        """The programs of an optional `exprlist`."""
        if not children:
            return []
        [exprlist] = children
        if not isinstance(exprlist, lark.Tree) or exprlist.data != "exprlist":
            raise Unsupported("arguments")
        return [build(child) for child in exprlist.children]

    try:
        return build(tree)
    except Unsupported:
        return None
