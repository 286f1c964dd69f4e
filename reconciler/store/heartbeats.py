"""Heartbeat tokens, last pings and started runs: tokens minted at random, shown once, stored
only as a hash.

One row per heartbeat check (`namespace/name` of its canary and the check's name). The table
is created on first use, and `started_at` added to older ones, so older state files need no
migration.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

from reconciler.store.db import Connection, transaction
from reconciler.store.tokens import hash_token

# Heartbeat tokens stand apart from agent tokens (`cra_`) so a log line says which it is.
TOKEN_PREFIX = "crh_"

_TABLE = """CREATE TABLE IF NOT EXISTS heartbeats (
    canary VARCHAR NOT NULL,
    check_name VARCHAR NOT NULL,
    token_hash VARCHAR NOT NULL,
    minted_at TIMESTAMPTZ NOT NULL,
    last_ping_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    PRIMARY KEY (canary, check_name)
)"""
# Tables of state files written before `/start` times were kept.
_STARTED_COLUMN = "ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ"

Key = tuple[str, str]  # (canary `namespace/name`, check name)


@dataclass(frozen=True)
class Heartbeat:
    """What the state keeps of one heartbeat check."""

    token_hash: str
    minted_at: datetime
    last_ping_at: datetime | None
    started_at: datetime | None = None  # a `/start` not yet followed by its end


def ensure_table(connection: Connection) -> None:
    """Create the table if this state file has none yet (a writing connection)."""
    connection.execute(_TABLE)
    connection.execute(_STARTED_COLUMN)


def _exists(connection: Connection) -> bool:
    return bool(
        connection.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'heartbeats' AND "
            "database_name = current_database() AND NOT temporary"
        ).fetchall()
    )


def heartbeat_is_configured(connection: Connection, canary: str, check: str) -> bool:
    """Whether the applied config has a Canary `canary` with a heartbeat check `check`."""
    found = connection.execute(
        "SELECT spec FROM resources WHERE kind = 'Canary' AND name = ?", [canary]
    ).fetchone()
    if found is None:
        return False
    spec = orjson.loads(found[0])
    return any(h.get("name") == check for h in spec.get("heartbeat", []))


def mint_heartbeat_token(connection: Connection, key: Key, now: datetime) -> str:
    """Create a new token for a heartbeat, replacing (and so revoking) any earlier one.

    The last ping is kept: rotating a token does not make a late job look on time.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ensure_table(connection)
    connection.execute(
        "INSERT INTO heartbeats (canary, check_name, token_hash, minted_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (canary, check_name) "
        "DO UPDATE SET token_hash = excluded.token_hash, minted_at = excluded.minted_at",
        [*key, hash_token(token), now],
    )
    return token


def load_heartbeats(connection: Connection) -> dict[Key, Heartbeat]:
    """Every heartbeat with a token: its token's hash, when it was minted, its last ping, and
    the `/start` of a run not yet ended (`ensure_table` first, for an older state file)."""
    if not _exists(connection):
        return {}
    rows = connection.execute(
        "SELECT canary, check_name, token_hash, minted_at, last_ping_at, started_at FROM heartbeats"
    ).fetchall()
    return {(canary, check): Heartbeat(*rest) for canary, check, *rest in rows}


def record_start(connection: Connection, key: Key, at: datetime) -> None:
    """Remember a `/start` ping until the run's end, so that a restart still times the run."""
    connection.execute(
        "UPDATE heartbeats SET started_at = ? WHERE canary = ? AND check_name = ?", [at, *key]
    )


def record_pings(connection: Connection, pings: Mapping[Key, datetime]) -> None:
    """Remember when heartbeats last pinged (ending any started run), in one transaction."""
    if not pings:
        return
    with transaction(connection):
        connection.executemany(
            "UPDATE heartbeats SET last_ping_at = ?, started_at = NULL "
            "WHERE canary = ? AND check_name = ?",
            [(at, *key) for key, at in pings.items()],
        )
