"""Agent tokens: minted at random, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from reconciler.store.db import Connection, transaction

TOKEN_PREFIX = "cra_"


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens carry 256 random bits, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def agent_of(token: str) -> str | None:
    """The agent a token names (`cra_<agent>.<secret>`), or None if it is not one of ours."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    # The secret never holds a dot, agent names may: split at the last one.
    return token[len(TOKEN_PREFIX) :].rpartition(".")[0] or None


def token_matches(token: str, stored_hash: str) -> bool:
    """Compare a presented token with a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def agent_is_configured(connection: Connection, agent: str) -> bool:
    """Whether the applied config has this agent: tokens are only minted for those."""
    found = connection.execute(
        "SELECT count(*) FROM resources WHERE address = ?", [f"agent.{agent}"]
    ).fetchone()
    return bool(found and found[0])


def mint_token(connection: Connection, agent: str, now: datetime) -> str:
    """Create a new token for an agent, replacing (and so revoking) any earlier one."""
    token = f"{TOKEN_PREFIX}{agent}.{secrets.token_urlsafe(32)}"
    with transaction(connection):
        connection.execute("DELETE FROM agent_tokens WHERE agent = ?", [agent])
        connection.execute(
            "INSERT INTO agent_tokens VALUES (?, ?, ?)", [agent, hash_token(token), now]
        )
    return token


def token_hashes(connection: Connection) -> dict[str, str]:
    """Every agent's current token hash."""
    return dict(connection.execute("SELECT agent, token_hash FROM agent_tokens").fetchall())


def revoke_token(connection: Connection, agent: str) -> bool:
    """Forget an agent's token; returns whether it had one."""
    removed = connection.execute(
        "DELETE FROM agent_tokens WHERE agent = ? RETURNING agent", [agent]
    ).fetchall()
    return bool(removed)
