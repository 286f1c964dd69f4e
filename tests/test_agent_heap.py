"""The agent keeps what lives as long as it does out of the collector's full passes
(`agent/process.py` `freeze_survivors`): such a pass over its modules and config took
70-120 ms at 600 checks a second, and every check due meanwhile started that much late."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.process import freeze_survivors
from agent.runtime import Agent
from agent.settings import AgentSettings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was found."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def config(*names: str) -> dict[str, Any]:
    canaries = [
        {
            "id": f"{name}-eu-1",
            "name": name,
            "schedule": "@every 1h",
            "checks": [{"type": "http", "name": "home", "url": "http://127.0.0.1:9/"}],
        }
        for name in names
    ]
    return {"agent": "eu-1", "region": "eu", "canaries": canaries}


def tracked(marker: str) -> bool:
    """Whether a dict holding `marker` is among the objects full passes walk."""
    return any(type(o) is dict and o.get("name") == marker for o in gc.get_objects())


@pytest.mark.anyio
async def test_an_applied_config_is_frozen_and_a_later_one_is_not_lost(
    tmp_path: Path, unfrozen: None
) -> None:
    agent = Agent(
        AgentSettings(url="http://127.0.0.1:9", token="cra_eu-1.test", spool=tmp_path / "s.db"),
        on_long_lived=freeze_survivors,  # as `agent run` builds it
    )
    agent._apply_config(config("checkout", "search"), '"v1"')
    try:
        assert gc.get_freeze_count() > 0
        assert not tracked("checkout")
        # A second config is applied as usual: its new canary runs, the removed one stops.
        agent._apply_config(config("search", "login"), '"v2"')
        assert sorted(agent.scheduler.canaries) == ["login-eu-1", "search-eu-1"]
        assert not tracked("login")
    finally:
        agent.scheduler.clear()


@pytest.mark.anyio
async def test_an_agent_inside_another_process_leaves_its_collector_alone(
    tmp_path: Path, unfrozen: None
) -> None:
    agent = Agent(
        AgentSettings(url="http://127.0.0.1:9", token="cra_eu-1.test", spool=tmp_path / "s.db")
    )
    agent._apply_config(config("checkout"), '"v1"')
    try:
        assert gc.get_freeze_count() == 0 and tracked("checkout")
    finally:
        agent.scheduler.clear()
