"""Notification deliveries and the alert-grouping state, kept in the state file so a restart
neither forgets what was sent nor re-sends it, and reminders stay on time.

Both tables are created on first use, so older state files need no migration. Deliveries are
bounded: the newest `KEPT_DELIVERIES` rows stay (up to `TRIM_SLACK` more between trims).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from reconciler.store.db import Connection

KEPT_DELIVERIES = 500
# Trimmed back to KEPT_DELIVERIES once this many more are stored: one trim per 50 inserts.
TRIM_SLACK = 50

_DELIVERIES = """CREATE TABLE IF NOT EXISTS notification_deliveries (
    delivered_at TIMESTAMPTZ NOT NULL,
    receiver VARCHAR NOT NULL,
    integration VARCHAR NOT NULL,
    events VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    error VARCHAR,
    group_key VARCHAR,
    reminder BOOLEAN NOT NULL
)"""
_GROUPS = """CREATE TABLE IF NOT EXISTS notification_groups (
    id INTEGER PRIMARY KEY,
    groups VARCHAR NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL
)"""
_COLUMNS = (
    "delivered_at",
    "receiver",
    "integration",
    "events",
    "status",
    "attempts",
    "error",
    "group_key",
    "reminder",
)


def _exists(connection: Connection, table: str) -> bool:
    return bool(
        connection.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND "
            "database_name = current_database() AND NOT temporary",
            [table],
        ).fetchall()
    )


def record_delivery(connection: Connection, delivery: Mapping[str, Any]) -> None:
    """Store one delivery (the API's document of it); trim to the newest `KEPT_DELIVERIES`
    once `TRIM_SLACK` more have accumulated."""
    connection.execute(_DELIVERIES)
    connection.execute(
        f"INSERT INTO notification_deliveries ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
        [
            delivery["at"],
            delivery["receiver"],
            delivery["integration"],
            orjson.dumps(list(delivery["events"])).decode(),
            delivery["status"],
            delivery["attempts"],
            delivery["error"],
            delivery.get("group"),
            bool(delivery.get("reminder", False)),
        ],
    )
    (count,) = connection.execute("SELECT count(*) FROM notification_deliveries").fetchone() or (0,)
    if count <= KEPT_DELIVERIES + TRIM_SLACK:
        return
    oldest = connection.execute(
        "SELECT delivered_at FROM notification_deliveries ORDER BY delivered_at DESC "
        "OFFSET ? LIMIT 1",
        [KEPT_DELIVERIES],
    ).fetchall()
    if oldest:
        connection.execute(
            "DELETE FROM notification_deliveries WHERE delivered_at <= ?", [oldest[0][0]]
        )


def recent_deliveries(connection: Connection, limit: int = KEPT_DELIVERIES) -> list[dict[str, Any]]:
    """The newest deliveries first, as `record_delivery` took them (`at` as a datetime)."""
    if not _exists(connection, "notification_deliveries"):
        return []
    rows = connection.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM notification_deliveries "
        "ORDER BY delivered_at DESC LIMIT ?",
        [limit],
    ).fetchall()
    found = []
    for at, receiver, integration, events, status, attempts, error, group, reminder in rows:
        found.append(
            {
                "at": at.astimezone(UTC),  # DuckDB answers in the session's time zone
                "receiver": receiver,
                "integration": integration,
                "events": orjson.loads(events),
                "status": status,
                "attempts": attempts,
                "error": error,
                "group": group,
                "reminder": reminder,
            }
        )
    return found


def save_groups(connection: Connection, groups: Any, at: datetime) -> None:
    """Replace the stored grouping state (plain data, `Dispatcher.snapshot()`)."""
    connection.execute(_GROUPS)
    connection.execute(
        "INSERT OR REPLACE INTO notification_groups VALUES (1, ?, ?)",
        [orjson.dumps(groups).decode(), at],
    )


def load_groups(connection: Connection) -> Any:
    """The stored grouping state, or None."""
    if not _exists(connection, "notification_groups"):
        return None
    rows = connection.execute("SELECT groups FROM notification_groups WHERE id = 1").fetchall()
    return orjson.loads(rows[0][0]) if rows else None
