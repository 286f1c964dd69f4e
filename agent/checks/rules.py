"""A check's `test` and `display` over the variables its type gives (tcp, icmp and grpc checks),
and how an expression's error weighs against the failures of the run (every type)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.expressions.cel import CelError, display, evaluate
from agent.expressions.celvars import check_context
from agent.expressions.gotemplate import TemplateError, render


def settle(failures: list[str], errors: list[str], shown: str | None) -> str | None:
    """Fold the errors of a run's expressions into its failures; return the message `display`
    gives.

    An expression that breaks on an answer that already failed its own conditions (a 503
    whose HTML page has no `json.status`) must not hide them: the run fails, naming its
    failures first and the expression's error after them. Only an expression error on a run
    that failed nothing else is an `error`: then the check's config, not the target, is at
    fault.

    Args:
        failures: The failed conditions, a false `test` included; changed in place: the
            errors are added after them, then `shown` in brackets after everything.
        errors: What the `test` and `display` raised, in that order.
        shown: The message `display` gave, or None.

    Returns:
        `shown`, the message of a passing run.

    Raises:
        CelError: an expression broke and no condition failed (the errors joined with `; `).
    """
    if errors and not failures:
        raise CelError("; ".join(errors))
    failures.extend(errors)
    if failures and shown is not None:
        failures[:] = [f"{'; '.join(failures)} ({shown})"]
    return shown


def display_error(error: CelError) -> str:
    """A broken `display`'s error, named as such (a `test`'s error is left as it is)."""
    return f"display: {error}"


def apply_rules(
    check: Mapping[str, Any],
    failures: list[str],
    variables: Mapping[str, Any],
    template_data: Mapping[str, Any],
) -> str | None:
    """Add a false `test` to `failures` and return the message `display` gives (or None).

    A broken `test` or `display` on a run that already failed is added to `failures` too
    (see `settle`).

    Args:
        check: The check as served (its `test`, `display`, name, labels and canary).
        failures: The failures so far; changed in place.
        variables: The CEL variables of the check type (`check` and `canary` are added).
        template_data: What a `display.template` looks up (`check` is added).

    Raises:
        CelError: an expression or template is broken and nothing else failed.
    """
    test, shown = check.get("test"), check.get("display")
    if not isinstance(test, Mapping) and not isinstance(shown, Mapping):
        return None
    context = {**variables, **check_context(check)}
    errors: list[str] = []
    expr = test.get("expr") if isinstance(test, Mapping) else None
    if isinstance(expr, str):
        try:
            if not evaluate(expr, context):
                failures.append(f"test {expr!r} is false")
        except CelError as error:
            errors.append(str(error))
    message = None
    if isinstance(shown, Mapping):
        try:
            message = _message(check, shown, context, template_data)
        except CelError as error:
            errors.append(display_error(error))
    return settle(failures, errors, message)


def _message(
    check: Mapping[str, Any],
    shown: Mapping[str, Any],
    context: dict[str, Any],
    template_data: Mapping[str, Any],
) -> str | None:
    if isinstance(shown.get("expr"), str):
        return display(shown["expr"], context)
    if isinstance(shown.get("template"), str):
        data = {**template_data, "check": {"name": check.get("name", "")}}
        try:
            return render(shown["template"], data)
        except TemplateError as error:
            raise CelError(str(error)) from error
    return None
