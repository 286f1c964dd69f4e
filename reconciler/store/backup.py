"""A consistent copy of the state file, made by DuckDB from an open connection
(`reconcile state backup`, or the server that holds the file: `POST /api/state/backup`).

Every table is copied in one read transaction into a new DuckDB file: writers (a server's
ingest) go on meanwhile, and the copy is the state as of that transaction's start. It is
written beside its destination under a hidden name and renamed into place once whole and
closed, so a file at the destination is always a complete state file.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from reconciler.store.db import Connection, StateError, state_ref


class BackupExists(StateError):
    """A file is at the backup's destination already: a backup never replaces one."""


@dataclass(frozen=True)
class Backup:
    """A backup made: where, its size, the state it holds and how long it took."""

    path: Path
    size: int
    serial: int
    lineage: str
    seconds: float

    def document(self) -> dict[str, Any]:
        """As the server answers it."""
        return {
            "out": str(self.path),
            "bytes": self.size,
            "serial": self.serial,
            "lineage": self.lineage,
            "seconds": round(self.seconds, 3),
        }


def backup_state(connection: Connection, out: Path) -> Backup:
    """Copy every table of the state `connection` reads into a new DuckDB file at `out`.

    Raises:
        BackupExists: `out` exists (a backup never replaces a file).
        StateError: `out` cannot be a file (its directory does not exist, its name is too
            long, it holds a NUL byte) or the copy failed; nothing is left at `out` then.
    """
    started = time.monotonic()
    partial = _prepare(out)
    alias = f"backup_{uuid.uuid4().hex[:12]}"
    quoted = str(partial).replace("'", "''")
    (source,) = connection.execute("SELECT current_database()").fetchone() or ("",)
    try:
        connection.execute(f"ATTACH '{quoted}' AS {alias} (READ_WRITE)")
        try:
            connection.execute("BEGIN TRANSACTION")
            try:
                ref = state_ref(connection)
                connection.execute(f'COPY FROM DATABASE "{source}" TO {alias}')
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    connection.execute("ROLLBACK")
                raise
        finally:
            connection.execute(f"DETACH {alias}")
        os.replace(partial, out)
    except duckdb.Error as error:
        _discard(partial)
        raise StateError(f"cannot write the backup to {out}: {error}") from error
    except OSError as error:
        _discard(partial)
        raise StateError(f"cannot write the backup to {out}: {error.strerror or error}") from error
    return Backup(out, out.stat().st_size, ref.serial, ref.lineage, time.monotonic() - started)


def _prepare(out: Path) -> Path:
    """Check that a backup may be written at `out`, clear what a killed copy left beside it,
    and return where the copy is written first.

    A path the system refuses (`ValueError` for a NUL byte, `OSError` for a name too long
    or a directory that cannot be read) is a StateError naming it, as a missing directory
    is: the server answers it with 422 and the CLI with an error line, not a traceback.

    Raises:
        BackupExists: `out` exists.
        StateError: `out` cannot be a new file.
    """
    try:
        if out.exists():
            raise BackupExists(f"{out} exists; a backup never replaces a file: choose a new name")
        if not out.parent.is_dir():
            raise StateError(f"cannot write the backup to {out}: {out.parent} is not a directory")
        partial = out.with_name(f".{out.name}.partial")
        _remove(partial)  # left by a copy that was killed
    except ValueError as error:  # a NUL byte: shown escaped
        raise StateError(f"cannot write the backup to {str(out)!r}: {error}") from error
    except OSError as error:
        raise StateError(f"cannot write the backup to {out}: {error.strerror or error}") from error
    return partial


def _remove(partial: Path) -> None:
    for path in (partial, partial.with_name(partial.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _discard(partial: Path) -> None:
    """`_remove` after a failed copy: best effort, so that a partial file that cannot be
    removed (a read-only file system) does not hide why the copy failed."""
    with contextlib.suppress(OSError):
        _remove(partial)
