"""Screenshots of browser checks that did not pass, a few per check, beside the results.

They arrive apart from result rows (`POST /api/agent/screenshots`), so the results path stays
as it is; a run's row and its picture share the derived canary, the check and `started_at`.
The table is created on first use, so older state files need no migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from reconciler.store.db import Connection

# One PNG of a headless page at its default 1280x720 viewport is 20-300 KB.
MAX_SCREENSHOT_BYTES = 1024 * 1024
# Pictures kept per (derived canary, check): the newest ones; older ones are deleted.
KEPT_PER_CHECK = 5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_TABLE = """CREATE TABLE IF NOT EXISTS screenshots (
    canary VARCHAR NOT NULL,
    check_name VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    agent VARCHAR NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    png BLOB NOT NULL,
    PRIMARY KEY (canary, check_name, started_at)
)"""


@dataclass(frozen=True)
class Screenshot:
    """One stored picture of a run that did not pass."""

    canary: str
    check: str
    started_at: datetime
    agent: str
    png: bytes


def _exists(connection: Connection) -> bool:
    return bool(
        connection.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'screenshots' AND "
            "database_name = current_database() AND NOT temporary"
        ).fetchall()
    )


def store_screenshot(connection: Connection, shot: Screenshot, received_at: datetime) -> int:
    """Keep `shot` (replacing one of the same run) and drop the check's oldest beyond the bound.

    Args:
        connection: The writing connection.
        shot: The picture and the run it belongs to.
        received_at: When the server received it.

    Returns:
        How many older pictures of the check were deleted to stay within `KEPT_PER_CHECK`.
    """
    connection.execute(_TABLE)
    connection.execute(
        "INSERT OR REPLACE INTO screenshots VALUES (?, ?, ?, ?, ?, ?)",
        [shot.canary, shot.check, shot.started_at, shot.agent, received_at, shot.png],
    )
    old = connection.execute(
        """SELECT started_at FROM screenshots WHERE canary = ? AND check_name = ?
           ORDER BY started_at DESC OFFSET ?""",
        [shot.canary, shot.check, KEPT_PER_CHECK],
    ).fetchall()
    if old:
        connection.execute(
            "DELETE FROM screenshots WHERE canary = ? AND check_name = ? AND started_at <= ?",
            [shot.canary, shot.check, old[0][0]],
        )
    return len(old)


def latest_screenshots(connection: Connection) -> dict[tuple[str, str], Screenshot]:
    """The newest picture of every (derived canary, check) that has one.

    Returns:
        Pictures by (derived canary, check); empty for a state file without the table.
    """
    if not _exists(connection):
        return {}
    rows = connection.execute(
        """SELECT canary, check_name, started_at, agent, png FROM screenshots
           QUALIFY row_number() OVER (PARTITION BY canary, check_name
                                      ORDER BY started_at DESC) = 1"""
    ).fetchall()
    return {
        (canary, check): Screenshot(canary, check, started_at, agent, bytes(png))
        for canary, check, started_at, agent, png in rows
    }
