"""Typed reads of a check's fields from the JSON the control plane serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(check: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    """A string field, or `default` when absent or null.

    Raises:
        ValueError: the field holds something other than a string.
    """
    value = check.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def required_text(check: Mapping[str, Any], key: str) -> str:
    """A string field that must be present.

    Raises:
        ValueError: the field is absent, null or not a string.
    """
    value = text(check, key)
    if value is None:
        raise ValueError(f"field {key!r} is required")
    return value


def integer(check: Mapping[str, Any], *keys: str) -> int | None:
    """The first of `keys` that holds an integer, or None when none is set.

    Raises:
        ValueError: a field holds something other than an integer.
    """
    for key in keys:
        value = check.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"field {key!r} must be an integer, got {value!r}")
        return value
    return None


def flag(check: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean field, or `default` when absent or null.

    Raises:
        ValueError: the field holds something other than a boolean.
    """
    value = check.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"field {key!r} must be a boolean, got {value!r}")
    return value


def items(check: Mapping[str, Any], key: str) -> list[Any]:
    """A list field, or an empty list when absent or null.

    Raises:
        ValueError: the field holds something other than a list.
    """
    value = check.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def threshold(check: Mapping[str, Any]) -> int | None:
    """The check's latency limit in milliseconds (`thresholdMillis` or `maxResponseTime`)."""
    return integer(check, "thresholdMillis", "maxResponseTime")
