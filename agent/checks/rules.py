"""A check's `test` and `display` over the variables its type gives (tcp, icmp and grpc checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.expressions.cel import CelError, check_context, display, evaluate
from agent.expressions.gotemplate import TemplateError, render


def apply_rules(
    check: Mapping[str, Any],
    failures: list[str],
    variables: Mapping[str, Any],
    template_data: Mapping[str, Any],
) -> str | None:
    """Add a false `test` to `failures` and return the message `display` gives (or None).

    Args:
        check: The check as served (its `test`, `display`, name, labels and canary).
        failures: The failures so far; changed in place.
        variables: The CEL variables of the check type (`check` and `canary` are added).
        template_data: What a `display.template` looks up (`check` is added).

    Raises:
        CelError: an expression or template is broken.
    """
    test, shown = check.get("test"), check.get("display")
    if not isinstance(test, Mapping) and not isinstance(shown, Mapping):
        return None
    context = {**variables, **check_context(check)}
    expr = test.get("expr") if isinstance(test, Mapping) else None
    if isinstance(expr, str) and not evaluate(expr, context):
        failures.append(f"test {expr!r} is false")
    if not isinstance(shown, Mapping):
        return None
    if isinstance(shown.get("expr"), str):
        message = display(shown["expr"], context)
    elif isinstance(shown.get("template"), str):
        data = {**template_data, "check": {"name": check.get("name", "")}}
        try:
            message = render(shown["template"], data)
        except TemplateError as error:
            raise CelError(str(error)) from error
    else:
        return None
    if failures:
        failures[:] = [f"{'; '.join(failures)} ({message})"]
    return message
