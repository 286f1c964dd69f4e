"""The nginx gateway's route files: written in one rename, set aside until nginx tests the
change, and put back when it refuses it (`NginxGateway._swap`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.gateway.nginx_config import parse_state


def read_state(path: Path) -> dict[str, Any] | None:
    """The state line of a route file, None when the file is absent or carries none."""
    try:
        return parse_state(path.read_text())
    except FileNotFoundError:
        return None


def write_atomic(path: Path, text: str | None) -> None:
    """Replace `path` with `text` in one rename (remove it when `text` is None)."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)  # half written on a full disk
        raise


def set_aside(path: Path) -> Path | None:
    """Keep the current `path` (a hard link beside it) to put back; None when it is absent."""
    kept = path.with_name(f".{path.name}.prev")
    kept.unlink(missing_ok=True)  # left by a process killed mid-change
    if not path.exists():
        return None
    try:
        os.link(path, kept)
    except OSError:
        shutil.copyfile(path, kept)  # a file system without hard links
    return kept


def put_back(kept: Mapping[Path, Path | None]) -> list[str]:
    """Put every file set aside back (remove those that were absent); what could not be."""
    problems = []
    for path, old in kept.items():
        try:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(old, path)
        except OSError as error:
            problems.append(f"{path}: {error.strerror or error}")
    return problems


def failure(error: Exception) -> str:
    """What went wrong, in words: nginx's message, or which file could not be written."""
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {error.strerror or error}"
    return str(error)
