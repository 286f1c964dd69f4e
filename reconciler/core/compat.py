"""Canary fields canary-checker defines that are refused or accepted unused, and expressions
that can never evaluate: turned into diagnostics at the line they were written (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from agent.expressions.cel import check_expression
from agent.expressions.celvars import (
    GRPC_VARIABLES,
    HTTP_VARIABLES,
    ICMP_VARIABLES,
    TCP_VARIABLES,
)
from agent.expressions.gotemplate import DOLLAR, TemplateError, variables
from agent.expressions.sample import sample_problem
from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.documents import Located
from schemas.base import Problem
from schemas.canary import CanaryDocument
from schemas.checks import HttpCheck, TemplatableCheck, is_templated
from schemas.compat import ACCEPTED, REFUSED, compat_fields
from schemas.limits import MAX_EXPRESSION_CHARS, limit_hint

ACCEPTED_PREFIX = "accepted, not used: "
# What a templated body can look up besides the check's env (canary-checker's context).
BODY_VARIABLES = frozenset({"canary", "check"})
# canary-checker renders an unknown name as Go's "<no value>" and runs the check anyway.
NO_VALUE = "it renders as '<no value>', as in canary-checker"


def _compile_problem(expr: str, names: frozenset[str]) -> str | None:
    """Why an expression cannot run, bounded: its parser recurses once per nesting level."""
    if len(expr) > MAX_EXPRESSION_CHARS:
        return (
            f"the expression has {len(expr)} characters, more than {MAX_EXPRESSION_CHARS}; "
            + limit_hint("expression length", MAX_EXPRESSION_CHARS)
        )
    try:
        return check_expression(expr, names)
    except RecursionError:
        return "the expression is nested too deeply to compile; split it or write it flatter"


def _expressions(
    check: TemplatableCheck, check_type: str, names: frozenset[str]
) -> Iterator[Problem]:
    for field in ("test", "display"):
        template = getattr(check, field)
        if template is not None and template.expr is not None:
            reason = _compile_problem(template.expr, names)
            if reason is None:
                reason = sample_problem(template.expr, check_type, boolean=field == "test")
            if reason is not None:
                yield ((field, "expr"), reason)
    display = check.display
    if display is not None and display.template is not None:
        try:
            variables(display.template)
        except TemplateError as error:
            yield (("display", "template"), str(error))


def _templates(check: HttpCheck) -> Iterator[Problem]:
    env = {variable.name for variable in check.env or []}
    where = "url" if check.url is not None else "endpoint"
    if is_templated(check.target):
        for delims in (DOLLAR, ("{{", "}}")):
            try:
                used = variables(check.target, delims)
            except TemplateError as error:
                yield ((where,), str(error))
                continue
            for name in sorted(used - env):
                known = ", ".join(sorted(env)) or "none"
                yield ((where,), f"{name!r} is not a variable of env (env: {known}); {NO_VALUE}")
    if check.templateBody and check.body is not None:
        try:
            used = variables(check.body)
        except TemplateError as error:
            yield (("body",), str(error))
            return
        for name in sorted(used - env - BODY_VARIABLES):
            known = ", ".join(sorted(env | BODY_VARIABLES))
            yield (("body",), f"{name!r} is not a variable of the body ({known}); {NO_VALUE}")


def canary_problems(model: CanaryDocument) -> Iterator[tuple[Problem, Severity]]:
    """Expressions that could never evaluate (errors) and template names that render as
    nothing (warnings). A check with a refused field is left out: that error says enough."""
    checks: Iterable[tuple[str, list[Any], frozenset[str]]] = (
        ("http", model.spec.http, HTTP_VARIABLES),
        ("tcp", model.spec.tcp, TCP_VARIABLES),
        ("icmp", model.spec.icmp, ICMP_VARIABLES),
        ("grpc", model.spec.grpc, GRPC_VARIABLES),
    )
    for check_type, items, names in checks:
        for index, check in enumerate(items):
            if next(compat_fields(check, REFUSED), None) is not None:
                continue
            where = ("spec", check_type, index)
            for path, message in _expressions(check, check_type, names):
                yield (((*where, *path), message), "error")
            if isinstance(check, HttpCheck):
                for path, message in _templates(check):
                    severity: Severity = "warning" if message.endswith(NO_VALUE) else "error"
                    yield (((*where, *path), message), severity)


def compat_errors(model: BaseModel) -> Iterator[Problem]:
    """The errors of `compat_diagnostics` alone: refused fields, expressions that can never
    evaluate."""
    yield from compat_fields(model, REFUSED)
    if isinstance(model, CanaryDocument):
        yield from (problem for problem, severity in canary_problems(model) if severity == "error")


def compat_diagnostics(document: Located[Any]) -> list[Diagnostic]:
    """Errors for refused fields and broken expressions, warnings for accepted fields and
    what a canary's fields say it will not do, notices for how they are read."""
    model = document.model
    found = [document.diagnostic(path, message) for path, message in compat_fields(model, REFUSED)]
    if isinstance(model, CanaryDocument):
        found += [document.diagnostic(p, m, s) for (p, m), s in canary_problems(model)]
        found += [document.diagnostic(p, m, "warning") for p, m in model.warnings()]
        found += [document.diagnostic(p, m, "notice") for p, m in model.notices()]
    found += [
        document.diagnostic(path, message, "warning")
        for path, message in compat_fields(model, ACCEPTED)
    ]
    return found


def one_notice_per_kind(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Keep the first "accepted, not used" notice of each field kind, saying how many
    places use it, so a repository of many such files is not drowned in notices."""
    counts: dict[str, int] = {}
    for diagnostic in diagnostics:
        if diagnostic.severity == "warning" and diagnostic.message.startswith(ACCEPTED_PREFIX):
            counts[diagnostic.message] = counts.get(diagnostic.message, 0) + 1
    kept: list[Diagnostic] = []
    seen: set[str] = set()
    for diagnostic in diagnostics:
        message = diagnostic.message
        if message in counts:
            if message in seen:
                continue
            seen.add(message)
            if counts[message] > 1:
                diagnostic = Diagnostic(
                    diagnostic.path,
                    diagnostic.line,
                    diagnostic.column,
                    diagnostic.subject,
                    diagnostic.field,
                    f"{message}; {counts[message]} places, this is the first",
                    diagnostic.severity,
                )
        kept.append(diagnostic)
    return kept
