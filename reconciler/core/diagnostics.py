"""Load and validation diagnostics: what is wrong, and exactly where it was written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# A notice says how something was read (nothing to fix); a warning asks for attention.
Severity = Literal["error", "warning", "notice"]
FieldPath = tuple[str | int, ...]


def format_field(path: FieldPath) -> str:
    """Render a field path as users write it: `spec.http[0].url`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem of a load: file, line, column, document, field and message."""

    path: str
    line: int
    column: int
    subject: str
    field: str
    message: str
    severity: Severity = "error"

    def format(self) -> str:
        """`path:line:column: kind/name: field: message`, leaving out empty parts."""
        parts = [f"{self.path}:{self.line}:{self.column}"]
        parts.extend(part for part in (self.subject, self.field) if part)
        parts.append(self.message)
        return ": ".join(parts)


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Only the errors, sorted by place."""
    return sorted(d for d in diagnostics if d.severity == "error")


def warnings(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Only the warnings, sorted by place."""
    return sorted(d for d in diagnostics if d.severity == "warning")


def notices(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Only the notices, sorted by place."""
    return sorted(d for d in diagnostics if d.severity == "notice")
