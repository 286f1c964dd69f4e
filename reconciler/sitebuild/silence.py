"""Silent agents on the status site: which enabled agents have not been heard from.

The same rule as the server's `agent_silent` events (core/agent_silence.py), read from the
state file: each agent's last pull and push (`agent_activity`, saved by the server) against
the threshold the server uses (`--agent-silent-after`, handed to the site builder). An agent
never heard from counts from when its resource was last written by an apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.agent_silence import last_heard, silent_agents
from reconciler.core.resources import Resource
from reconciler.sitebuild import formatting as fmt
from reconciler.store.agent_activity import load_activity
from reconciler.store.db import Connection


@dataclass(frozen=True)
class SilentAgent:
    """An enabled agent not heard from for longer than the threshold."""

    name: str
    region: str
    since: datetime  # last heard from, or when it was configured if never
    heard: bool  # whether it was ever heard from

    def view(self) -> dict[str, Any]:
        """What the pages show of it."""
        return {
            "name": self.name,
            "region": self.region,
            "since": fmt.moment(self.since),
            "since_iso": fmt.iso(self.since),
            "heard": self.heard,
        }


def silent_of(
    connection: Connection, resources: list[Resource], now: datetime, after: timedelta | None
) -> list[SilentAgent]:
    """The silent agents at `now`, by region and name (none when `after` is None: off)."""
    if after is None:
        return []
    enabled_regions = {
        r.name for r in resources if r.kind == "Region" and r.spec.get("enabled", True)
    }
    declared = {r.name for r in resources if r.kind == "Region"}
    regions = {
        r.name: str(r.spec["region"])
        for r in resources
        if r.kind == "Agent"
        and r.spec.get("enabled", True)
        and (r.spec["region"] in enabled_regions or r.spec["region"] not in declared)
    }
    if not regions:
        return []
    activity = load_activity(connection) if _has_activity(connection) else {}
    heard = {agent: last_heard(*seen) for agent, seen in activity.items()}
    configured = dict(
        connection.execute("SELECT name, updated_at FROM resources WHERE kind = 'Agent'").fetchall()
    )
    found = []
    for agent, region in regions.items():
        since = configured.get(agent, now)
        silent = silent_agents(heard, [agent], now, after, since)
        if agent in silent:
            found.append(SilentAgent(agent, region, silent[agent], heard.get(agent) is not None))
    return sorted(found, key=lambda a: (a.region, a.name))


def _has_activity(connection: Connection) -> bool:
    """Whether the state has `agent_activity`: a file written before it, opened read-only
    (no migration), has not, and its agents were never heard from as far as it knows."""
    return bool(
        connection.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'agent_activity' AND "
            "database_name = current_database() AND NOT temporary"
        ).fetchall()
    )
