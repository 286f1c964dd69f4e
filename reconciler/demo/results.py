"""What the demo's agents stored, read from the state file once the server has stopped."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from reconciler.store.db import StateError, open_state
from reconciler.store.results import results_per_agent


def results_by_region(state: Path, since: datetime, regions: Mapping[str, str]) -> dict[str, int]:
    """Result rows stored since `since`, by the region of the agent that ran them.

    Args:
        state: the state file (free: the server has stopped).
        since: when the demo started.
        regions: agent name to region; agents not in it count under `?`.
    """
    counts: dict[str, int] = {}
    with contextlib.suppress(StateError):
        connection = open_state(state, read_only=True, lock_timeout=5)
        if connection is None:
            return counts
        with connection:
            per_agent = results_per_agent(connection, since)
        for agent, count in per_agent.items():
            region = regions.get(agent, "?")
            counts[region] = counts.get(region, 0) + count
    return counts
