"""CEL functions of canary-checker's environment that cel-python lacks.

canary-checker evaluates CEL with flanksource/gomplate, which adds gomplate's functions,
cel-go's string extensions and optional types to the CEL standard library. These are the
ones its published http/tcp expressions use, with the same names and results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel

from schemas.durations import parse_duration

# gomplate's Duration also reads days and weeks, which Go's time.ParseDuration does not.
_LONG_UNITS = {"d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class Optional:
    """A CEL optional value: present (holding `value`) or empty."""

    def __init__(self, value: Any = None, present: bool = False) -> None:
        self.value = value
        self.present = present

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


def _optional(target: Any, fields: celtypes.ListType) -> Optional:
    value = target.value if isinstance(target, Optional) else target
    if isinstance(target, Optional) and not target.present:
        return Optional()
    for field in fields:
        if not isinstance(value, celtypes.MapType) or field not in value:
            return Optional()
        value = value[field]
    return Optional(value, present=True)


def _or_value(target: Any, default: Any) -> Any:
    if isinstance(target, Optional):
        return target.value if target.present else default
    return default if target is None else target


def _has_value(target: Any) -> celtypes.BoolType:
    if isinstance(target, Optional):
        return celtypes.BoolType(target.present)
    return celtypes.BoolType(target is not None)


def _value(target: Any) -> Any:
    if isinstance(target, Optional):
        if not target.present:
            raise ValueError("optional.none() has no value")
        return target.value
    return target


def parse_long_duration(text: str) -> float:
    """Seconds of a Go duration that may also use d (days), w (weeks) and y (years)."""
    stripped = text.strip()
    total, number = 0.0, ""
    rest = ""
    for char in stripped:
        if char.isdigit() or char == ".":
            number += char
        elif char in _LONG_UNITS and number and not rest:
            total += float(number) * _LONG_UNITS[char]
            number = ""
        else:
            rest = stripped[stripped.index(number + char) if number else stripped.index(char) :]
            break
    if number and not rest:
        raise ValueError(f"invalid duration {text!r}: missing unit")
    return total + (parse_duration(rest) if rest else 0.0)


def _duration(text: celtypes.StringType) -> celtypes.DurationType:
    return celtypes.DurationType(timedelta(seconds=parse_long_duration(str(text))))


def _keys(target: celtypes.MapType) -> celtypes.ListType:
    return celtypes.ListType(list(target.keys()))


def _char_at(text: celtypes.StringType, index: celtypes.IntType) -> celtypes.StringType:
    position = int(index)
    if position == len(text):
        return celtypes.StringType("")
    if not 0 <= position < len(text):
        raise IndexError(f"index out of range: {position}")
    return celtypes.StringType(text[position])


def _index_of(text: celtypes.StringType, part: celtypes.StringType) -> celtypes.IntType:
    return celtypes.IntType(str(text).find(str(part)))


def _substring(text: celtypes.StringType, start: Any, end: Any = None) -> celtypes.StringType:
    return celtypes.StringType(str(text)[int(start) : None if end is None else int(end)])


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(p) for p in str(text).split(str(separator))])


def _join(items: celtypes.ListType, separator: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(separator).join(str(item) for item in items))


def _replace(text: celtypes.StringType, old: Any, new: Any) -> celtypes.StringType:
    return celtypes.StringType(str(text).replace(str(old), str(new)))


def to_python(value: Any) -> Any:
    """A CEL value as plain Python data (for JSON and messages)."""
    if isinstance(value, Optional):
        return to_python(value.value) if value.present else None
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, (celtypes.IntType, celtypes.UintType)):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.MapType):
        return {str(to_python(k)): to_python(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [to_python(item) for item in value]
    if isinstance(value, celtypes.DurationType):
        return str(value)
    return value


def _to_json(value: Any) -> celtypes.StringType:
    return celtypes.StringType(json.dumps(to_python(value), default=str))


def _from_json(text: celtypes.StringType) -> Any:
    return json_to_cel(json.loads(str(text)))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_optional": _optional,
    "orValue": _or_value,
    "hasValue": _has_value,
    "value": _value,
    "Duration": _duration,
    "keys": _keys,
    "charAt": _char_at,
    "indexOf": _index_of,
    "substring": _substring,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "lowerAscii": lambda text: celtypes.StringType(str(text).lower()),
    "upperAscii": lambda text: celtypes.StringType(str(text).upper()),
    "trim": lambda text: celtypes.StringType(str(text).strip()),
    "toJSON": _to_json,
    "fromJSON": _from_json,
}
