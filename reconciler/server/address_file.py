"""Where a running server says its URL, for CLI commands that need its state file."""

from __future__ import annotations

from pathlib import Path


def server_file(state: Path) -> Path:
    """The file next to the state file in which `reconcile serve` writes its URL and pid."""
    return state.with_name(state.name + ".serve.json")
