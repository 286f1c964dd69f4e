"""When each agent last pulled its config and pushed results, kept across restarts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reconciler.store.db import Connection, transaction

Activity = tuple[datetime | None, datetime | None]  # (last pull, last push)


def load_activity(connection: Connection) -> dict[str, Activity]:
    """Every agent's stored last pull and last push."""
    rows = connection.execute("SELECT agent, last_pull, last_push FROM agent_activity").fetchall()
    return {agent: (pull, push) for agent, pull, push in rows}


def save_activity(connection: Connection, activity: Mapping[str, Activity]) -> None:
    """Store (replace) the given agents' last pull and push, in one transaction."""
    if not activity:
        return
    agents = list(activity)
    with transaction(connection):
        connection.execute(
            "DELETE FROM agent_activity WHERE agent IN (SELECT unnest($agents::VARCHAR[]))",
            {"agents": agents},
        )
        connection.executemany(
            "INSERT INTO agent_activity VALUES (?, ?, ?)",
            [(agent, *activity[agent]) for agent in agents],
        )
