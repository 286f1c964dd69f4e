"""Opening the `--state` file for a command that reads or archives an existing one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.console import Console

if TYPE_CHECKING:
    from reconciler.store.db import Connection


def existing_state(
    state: Path, console: Console, *, read_only: bool, lock_timeout: float
) -> Connection | None:
    """The state file opened, never created (such a command must not leave an empty file
    behind); None once the console said why it cannot be: missing, locked or unusable."""
    from reconciler.store.db import StateError, open_state

    missing = f"{state} does not exist yet; run `reconcile apply` first"
    if not state.exists():
        console.error(missing)
        return None
    try:
        connection = open_state(state, read_only=read_only, lock_timeout=lock_timeout)
    except StateError as error:
        console.error(str(error))
        return None
    if connection is None:  # removed since the check above
        console.error(missing)
    return connection
