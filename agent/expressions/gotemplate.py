"""The part of Go templates that canary-checker files use: `{{.field.path}}` lookups.

canary-checker renders `display.template`, `templateBody` bodies and `$(VAR)` references in
URLs with Go's text/template. Here an action may be a lookup (`.`, `.a.b`, or a bare name,
as canary-checker's value functions allow), optionally piped to `toJSON` or `toJSONPretty`.
Anything else is refused when the file is loaded, never half-rendered at run time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

BRACES = ("{{", "}}")
DOLLAR = ("$(", ")")
_PATH = re.compile(r"^(\.|(\.?[A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z_][A-Za-z0-9_]*)*)$")
_PIPE = re.compile(r'^(toJSON|toJSONPretty)(\s+"[^"]*")?$')
NO_VALUE = "<no value>"


class TemplateError(ValueError):
    """A template uses Go template features that are not evaluated here."""


@dataclass(frozen=True)
class Action:
    """One `{{ ... }}` action: a lookup path and an optional JSON pipe."""

    path: tuple[str, ...]
    pipe: str | None
    indent: str


def _syntax_problem(source: str) -> str | None:
    """What Go's template parser refuses in an action before reading it (a quoted string not
    closed on its line, an action running into the next `{{`), or None."""
    if "{{" in source:
        return "an action is not closed with }} before the next {{"
    for line in source.split("\n"):
        if (line.count('"') - line.count('\\"')) % 2:
            return "unterminated quoted string"
    return None


def _action(source: str) -> Action:
    if problem := _syntax_problem(source):
        shown = source.strip()[:60]
        raise TemplateError(f"invalid Go template: {problem} in action {shown!r}")
    parts = [part.strip() for part in source.split("|")]
    lookup, pipes = parts[0], parts[1:]
    if not _PATH.match(lookup) or len(pipes) > 1:
        raise TemplateError(
            f"not supported: Go template action {source.strip()!r} "
            "(only lookups such as {{.json.field}}, optionally | toJSON, are evaluated here)"
        )
    pipe, indent = None, ""
    if pipes:
        match = _PIPE.match(pipes[0])
        if match is None:
            raise TemplateError(
                f"not supported: Go template function {pipes[0]!r} (only toJSON and "
                "toJSONPretty are evaluated here)"
            )
        pipe = match.group(1)
        indent = (match.group(2) or ' "  "').strip()[1:-1]
    path = tuple(p for p in lookup.split(".") if p)
    return Action(path, pipe, indent)


def _pieces(template: str, delims: tuple[str, str]) -> Iterator[str | Action]:
    left, right = delims
    position = 0
    while True:
        start = template.find(left, position)
        if start < 0:
            yield template[position:]
            return
        end = template.find(right, start + len(left))
        if end < 0:
            raise TemplateError(f"unclosed {left!r} in template")
        text = template[position:start]
        inner = template[start + len(left) : end]
        if inner.startswith("-") and left == "{{":
            text, inner = text.rstrip(), inner[1:]
        trim_after = inner.endswith("-") and left == "{{"
        if trim_after:
            inner = inner[:-1]
        yield text
        yield _action(inner)
        position = end + len(right)
        if trim_after:
            while position < len(template) and template[position].isspace():
                position += 1


def parse(template: str, delims: tuple[str, str] = BRACES) -> list[str | Action]:
    """Split a template into text and actions.

    Raises:
        TemplateError: an action uses something other than a lookup and a JSON pipe.
    """
    return [piece for piece in _pieces(template, delims) if piece != ""]


def variables(template: str, delims: tuple[str, str] = BRACES) -> set[str]:
    """The top-level names a template looks up (`.json.a` -> `json`).

    Raises:
        TemplateError: the template is not supported.
    """
    return {p.path[0] for p in parse(template, delims) if isinstance(p, Action) and p.path}


def _go_duration(value: timedelta) -> str:
    total = value.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{sign}{int(minutes)}m{text}"
    return sign + text


def format_value(value: Any) -> str:
    """A value as Go's fmt prints it, for the types a check's data holds."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, timedelta):
        return _go_duration(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def render(template: str, data: Mapping[str, Any], delims: tuple[str, str] = BRACES) -> str:
    """Render a template against `data`; a missing key renders as Go's `<no value>`.

    Raises:
        TemplateError: the template is not supported.
    """
    out: list[str] = []
    for piece in parse(template, delims):
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = _lookup(data, piece.path)
        if piece.pipe == "toJSON":
            out.append(json.dumps(value, default=format_value))
        elif piece.pipe == "toJSONPretty":
            out.append(json.dumps(value, indent=piece.indent or "  ", default=format_value))
        else:
            out.append(format_value(value))
    return "".join(out)
