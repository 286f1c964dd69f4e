"""Fields kept from canary-checker's Canary that this project accepts unused or refuses.

Every field of canary-checker's `api/v1` types is in one of three classes: implemented
(a normal model field), accepted but not acted on, or not supported. The last two are
declared with `accepted()` / `refused()` so that the reason lives beside the field, shows
in the JSON Schema, and the loader reports it: a notice for an accepted field, an error
for a refused one. Such fields are never dumped, so they never reach the plan or an agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from schemas.base import Problem

COMPAT_KEY = "x-compat"
REASON_KEY = "x-compat-reason"
ACCEPTED = "accepted"
REFUSED = "refused"
CHECK_TYPE = "check-type"
SUPPORTED_CHECK_TYPES = "http, tcp, dns, tls, icmp, multihttp, grpc, browser"
NEEDS_KUBERNETES = "needs Kubernetes; use valueFrom.env or value: ${env:NAME}"


def accepted(reason: str) -> Any:
    """A field read and reported as accepted but not used; `reason` says why it has no effect."""
    return Field(
        default=None,
        exclude=True,
        description=f"Accepted, not used: {reason}.",
        json_schema_extra={COMPAT_KEY: ACCEPTED, REASON_KEY: reason},
    )


def refused(reason: str) -> Any:
    """A field that is an error when written; `reason` says why and what to use instead."""
    return Field(
        default=None,
        exclude=True,
        description=f"Not supported: {reason}.",
        json_schema_extra={COMPAT_KEY: REFUSED, REASON_KEY: reason},
    )


def unsupported_check_type() -> Any:
    """A canary-checker check type this project does not run."""
    return Field(
        default=None,
        exclude=True,
        description="Not supported: a check type not run here "
        f"(supported: {SUPPORTED_CHECK_TYPES}).",
        json_schema_extra={COMPAT_KEY: CHECK_TYPE},
    )


def _reason(model: type[BaseModel], name: str) -> tuple[str, str] | None:
    info = model.model_fields[name]
    extra = info.json_schema_extra
    if not isinstance(extra, dict) or COMPAT_KEY not in extra:
        return None
    return str(extra[COMPAT_KEY]), str(extra.get(REASON_KEY, ""))


def _children(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[BaseModel, tuple[str | int, ...]]]:
    if isinstance(value, BaseModel):
        yield value, path
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _children(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _children(item, (*path, key))


def compat_fields(model: BaseModel, kind: str) -> Iterator[Problem]:
    """Every written field of class `kind` (ACCEPTED or REFUSED) in a model tree.

    Args:
        model: The validated model to walk.
        kind: ACCEPTED or REFUSED.

    Returns:
        (field path, message) pairs: `not supported: field (reason)` for refused fields,
        `accepted, not used: field (reason)` for accepted ones.
    """
    cls = type(model)
    for name in cls.model_fields:
        value = getattr(model, name)
        if value is None:
            continue
        found = _reason(cls, name)
        if found is not None:
            if found[0] == CHECK_TYPE and kind == REFUSED:
                message = (
                    f"check type {name!r} is not supported (supported: {SUPPORTED_CHECK_TYPES})"
                )
                yield ((name,), message)
            elif found[0] == kind:
                label = "not supported" if kind == REFUSED else "accepted, not used"
                yield ((name,), f"{label}: {name} ({found[1]})")
            continue
        for child, path in _children(value, (name,)):
            for inner, message in compat_fields(child, kind):
                yield ((*path, *inner), message)
