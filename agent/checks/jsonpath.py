"""A small JSON path subset for multi-step HTTP checks: `$`, `.key`, `['key']`, `[n]`, `[*]`.

Enough for what flows capture and assert (`$.token`, `$.orders[0].id`, `$.items[*].state`)
without a dependency; the schema refuses paths outside the subset when the config loads.
"""

from __future__ import annotations

import json
import re
from typing import Any

_STEP = re.compile(
    r"\.([A-Za-z_$][A-Za-z0-9_$-]*)|\[([0-9]+)\]|\[\*\]|\.\*|\['([^']*)'\]|\[\"([^\"]*)\"\]"
)
_WILDCARD = object()


def _steps(path: str) -> list[Any]:
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} does not start with $")
    steps: list[Any] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"JSON path {path!r} is not understood at {path[position:]!r}")
        key, index, quoted, double = match.groups()
        if index is not None:
            steps.append(int(index))
        elif key is not None or quoted is not None or double is not None:
            steps.append(next(p for p in (key, quoted, double) if p is not None))
        else:
            steps.append(_WILDCARD)
        position = match.end()
    return steps


def find(document: Any, path: str) -> list[Any]:
    """Every value `path` selects in a parsed JSON document (empty when none).

    Raises:
        ValueError: the path is outside the subset.
    """
    current = [document]
    for step in _steps(path):
        found: list[Any] = []
        for value in current:
            if step is _WILDCARD:
                if isinstance(value, dict):
                    found.extend(value.values())
                elif isinstance(value, list):
                    found.extend(value)
            elif isinstance(step, int):
                if isinstance(value, list) and step < len(value):
                    found.append(value[step])
            elif isinstance(value, dict) and step in value:
                found.append(value[step])
        current = found
    return current


def as_text(value: Any) -> str:
    """A selected value as assertions compare it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
