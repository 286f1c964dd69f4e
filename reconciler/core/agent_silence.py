"""Silent agents: which agents have not been heard from for too long (pure).

An agent is heard from when it pulls its config (a held pull counts from when it was asked
and again when it was answered) or pushes results. One that is enabled and has not been heard
from for `after` is silent; an agent never heard from counts from `since` (when the server
started, or when it was first configured), so a fleet is not declared silent the moment a
server starts. The controller announces the changes: `agent_silent`, then `agent_recovered`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any


def last_heard(pull: datetime | None, push: datetime | None) -> datetime | None:
    """The later of an agent's last pull and last push."""
    if pull is None or push is None:
        return pull or push
    return max(pull, push)


def silent_agents(
    heard: Mapping[str, datetime | None],
    watched: Iterable[str],
    now: datetime,
    after: timedelta,
    since: datetime,
) -> dict[str, datetime]:
    """Each watched agent not heard from within `after`, with when it was last heard from
    (or `since`, for one never heard from)."""
    silent = {}
    for agent in watched:
        last = heard.get(agent) or since
        if now - last > after:
            silent[agent] = last
    return silent


def changes(
    before: Mapping[str, datetime],
    now_silent: Mapping[str, datetime],
    heard: Mapping[str, datetime | None],
    regions: Mapping[str, str],
    now: datetime,
) -> list[dict[str, Any]]:
    """The events between two readings: `agent_silent` for the newly silent, and
    `agent_recovered` for those heard from again (not for agents no longer watched)."""
    events: list[dict[str, Any]] = []
    for agent in sorted(set(now_silent) - set(before)):
        events.append(
            {
                "type": "agent_silent",
                "agent": agent,
                "region": regions.get(agent),
                "last_heard": _iso(now_silent[agent]),
                "at": _iso(now),
            }
        )
    for agent in sorted(set(before) - set(now_silent)):
        if agent not in regions:
            continue  # removed from the config: nothing recovered
        events.append(
            {
                "type": "agent_recovered",
                "agent": agent,
                "region": regions.get(agent),
                "silent_since": _iso(before[agent]),
                "last_heard": _iso(heard.get(agent)),
                "at": _iso(now),
            }
        )
    return events


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None
