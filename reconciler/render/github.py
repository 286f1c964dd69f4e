"""GitHub Actions workflow commands: annotations on the lines that have problems."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from reconciler.core.diagnostics import Diagnostic


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(diagnostic: Diagnostic, root: str = "") -> str:
    """One `::error file=…,line=…,col=…::message` (or `::warning`) line."""
    path = posixpath.normpath(posixpath.join(root, diagnostic.path)) if root else diagnostic.path
    title = diagnostic.subject or "canary-reconciler"
    message = (
        f"{diagnostic.field}: {diagnostic.message}" if diagnostic.field else diagnostic.message
    )
    return (
        f"::{diagnostic.severity} file={_escape_property(path)},line={diagnostic.line},"
        f"col={diagnostic.column},title={_escape_property(title)}::{_escape_data(message)}"
    )


def render_annotations(diagnostics: Iterable[Diagnostic], root: str = "") -> str:
    """Annotations for every diagnostic, one per line."""
    return "".join(annotation(d, root) + "\n" for d in diagnostics)
