"""The newest revision the control plane refused, kept until a revision is applied.

The server keeps serving the last good revision when a commit does not load or apply; the
status site says so on every page (the commit, its first error, the revision served), also
when it is built by another process or after a restart, so the refusal is stored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from reconciler.store.db import Connection


@dataclass(frozen=True)
class Refusal:
    """A refused revision.

    Attributes:
        sha: its commit (None for a working tree).
        label: how logs name it (short SHA, or "working tree").
        refused_at: when.
        errors: every error, as `path:line:column: …` where the loader knows the place.
        served_sha: the revision still served (None before any was applied).
        served_label: how logs name that one.
    """

    sha: str | None
    label: str
    refused_at: datetime
    errors: tuple[str, ...]
    served_sha: str | None
    served_label: str | None


def record_refusal(connection: Connection, refusal: Refusal) -> None:
    """Keep `refusal` as the newest (it replaces any earlier one), unless the same revision
    was refused for the same errors already: the source is polled, and the first refusal's
    time stays (pages showing the banner are not drawn again for each poll)."""
    known = connection.execute("SELECT sha, label, errors FROM refusals").fetchall()
    same = known and known[0][:2] == (refusal.sha, refusal.label)
    if same and orjson.loads(known[0][2]) == list(refusal.errors):
        return
    connection.execute("DELETE FROM refusals")
    connection.execute(
        "INSERT INTO refusals VALUES (?, ?, ?, ?, ?, ?)",
        [
            refusal.sha,
            refusal.label,
            refusal.refused_at,
            orjson.dumps(list(refusal.errors)).decode(),
            refusal.served_sha,
            refusal.served_label,
        ],
    )


def clear_refusal(connection: Connection) -> None:
    """Forget the refusal: a revision was applied since."""
    connection.execute("DELETE FROM refusals")


def latest_refusal(connection: Connection) -> Refusal | None:
    """The refusal in force, if any (None as well for a state file older than the table)."""
    exists = connection.execute(
        "SELECT 1 FROM duckdb_tables() WHERE table_name = 'refusals' AND database_name = "
        "current_database() AND NOT temporary"
    ).fetchall()
    if not exists:
        return None
    row = connection.execute(
        "SELECT sha, label, refused_at, errors, served_sha, served_label FROM refusals LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    sha, label, refused_at, errors, served_sha, served_label = row
    return Refusal(sha, label, refused_at, tuple(orjson.loads(errors)), served_sha, served_label)
