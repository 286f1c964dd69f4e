"""Turn pydantic validation errors into messages that say what was expected."""

from __future__ import annotations

import datetime
import difflib
import re
import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.core.diagnostics import Diagnostic, FieldPath, format_field
from reconciler.core.yamlparse import locate

# Only near-typos are suggested: at difflib's default 0.6, 'username' was offered 'name' and
# 'digest' was offered 'test', fields of a different meaning.
SUGGEST_CUTOFF = 0.8
# Field errors listed one by one per document; the rest are counted in one more diagnostic.
MAX_ERRORS_PER_DOCUMENT = 100


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (list, dict, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found.extend(_models_in(argument))
    return found


def _names(name: str, alias: object) -> list[str]:
    if isinstance(alias, str):
        return [name, alias]
    if isinstance(alias, AliasChoices):
        return [name, *(choice for choice in alias.choices if isinstance(choice, str))]
    return [name]


def _field_names(model: type[BaseModel]) -> list[str]:
    return [
        n for name, info in model.model_fields.items() for n in _names(name, info.validation_alias)
    ]


def allowed_fields(model: type[BaseModel], path: FieldPath) -> list[str]:
    """The field names allowed at `path` (the mapping holding the last part) in `model`."""
    current: list[type[BaseModel]] = [model]
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        following: list[type[BaseModel]] = []
        for candidate in current:
            for name, info in candidate.model_fields.items():
                if part in _names(name, info.validation_alias):
                    following.extend(_models_in(info.annotation))
        current = following
    return sorted({name for candidate in current for name in _field_names(candidate)})


_INSTANCE_OF = re.compile(r" or instance of \w+")


def type_name(value: Any) -> str:
    """How a YAML value's type is called in messages."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date" if not isinstance(value, datetime.datetime) else "a time"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _shown(value: Any) -> str:
    """A value as the YAML wrote it, not as Python shows it (`true`, `2020-01-01`, `null`)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (datetime.date, datetime.datetime)):
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """A message for one validation error, with the offending value or a suggestion."""
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = allowed_fields(model, loc)
        if name in allowed:
            return f"{name!r} names a field that is already set under another name; keep one"
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=SUGGEST_CUTOFF)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = f" (allowed: {', '.join(allowed)})" if allowed and not close else ""
        return f"unknown field {name!r}{hint}{listing}"
    if kind == "missing":
        return "required field is missing"
    # pydantic names the model class ("a valid dictionary or instance of RegionSpec"): the
    # YAML has a mapping of fields there.
    message = _INSTANCE_OF.sub("", error["msg"]).replace("valid dictionary", "mapping of fields")
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        return message
    if kind in ("model_type", "dataclass_type") or kind.endswith("_type"):
        return f"{message} (got {type_name(error['input'])}: {_shown(error['input'])})"
    return f"{message} (got {_shown(error['input'])})"


def validation_diagnostics(
    path: str,
    raw: Any,
    error: ValidationError,
    model: type[BaseModel],
    subject: str,
    prefix: tuple[str | int, ...] = (),
) -> list[Diagnostic]:
    """One diagnostic per pydantic error, at the line of the field in `raw`.

    Args:
        path: the file.
        raw: the parsed YAML the model was validated from.
        error: pydantic's errors.
        model: the model validated.
        subject: the document, `Kind/name`, or empty.
        prefix: where the validated value sits inside `raw`.
    """
    details = [
        (prefix + _written(raw, prefix, detail), detail)
        for detail in error.errors(include_url=False)
    ]
    # A value of a union field (a duration or an integer) fails every member; the members it
    # is not even the type of say nothing when another member says what is wrong.
    telling = {loc for loc, detail in details if not detail["type"].endswith("_type")}
    kept = [(loc, d) for loc, d in details if not (loc in telling and d["type"].endswith("_type"))]
    found = []
    for loc, detail in kept[:MAX_ERRORS_PER_DOCUMENT]:
        line, column = locate(raw, loc) or (1, 1)
        found.append(
            Diagnostic(path, line, column, subject, format_field(loc), explain(detail, model))
        )
    if len(kept) > MAX_ERRORS_PER_DOCUMENT:
        # 60,000 wrong list items are one mistake: the first ones show it, the rest counted.
        last = found[-1]
        more = len(kept) - MAX_ERRORS_PER_DOCUMENT
        message = (
            f"and {more} more error(s) in this document "
            f"(the first {MAX_ERRORS_PER_DOCUMENT} are listed)"
        )
        found.append(Diagnostic(path, last.line, last.column + 1, subject, "", message))
    return found


def _written(raw: Any, prefix: FieldPath, detail: ErrorDetails) -> FieldPath:
    """An error's location without the union member tags pydantic adds under a value
    (`timeout.constrained-int`): the parts that go below a plain value are not fields."""
    node = raw
    for part in prefix:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    kept: list[str | int] = []
    for part in detail["loc"]:
        if isinstance(node, dict):
            kept.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            kept.append(part)
            node = node[part] if part < len(node) else None
        elif node is None or isinstance(part, int):
            kept.append(part)  # below a missing field, or an index into a non-list
        # else: a tag below a plain value; left out
    return tuple(kept)
