"""Finding the `reconcile serve` that holds a state file, for CLI commands that must go
through it."""

from __future__ import annotations

from pathlib import Path

import orjson

from reconciler.serve import server_file


def server_url(state: Path, explicit: str | None = None) -> str | None:
    """`--server` when given, else the URL the server wrote next to the state file, else None."""
    if explicit:
        return explicit.rstrip("/")
    info = server_file(state)
    if not info.exists():
        return None
    return str(orjson.loads(info.read_bytes())["url"])
