"""Silent agents: an agent that stops is announced `agent_silent` to the notification hooks,
`agent_recovered` when it is back; its last pull and push survive a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agent.runtime import Agent
from reconciler.core.agent_silence import changes, silent_agents
from tests import httpd
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.inprocess import BASE_URL, serving, until_ready
from tests.test_agent_shipping import running_agent, settings
from tests.test_notify import Receiver
from tests.waiting import eventually

ADMIN = "admin-token-for-tests"
CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: a
spec:
  schedule: '@never'
  agentSelector: ['*']
  http:
    - name: check
      url: http://127.0.0.1:9/
"""
NOON = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("eu-2", "eu"))
    config_repo.write("canaries/a.yaml", CANARY)
    config_repo.commit("initial")
    return config_repo


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver(failures=0)
    yield receiver
    httpd.stop(receiver.server)


def delivered(hook: Receiver, kind: str, agent: str) -> bool:
    return any(
        event.get("type") == kind and event.get("agent") == agent
        for event in (orjson.loads(body) for _, body in hook.received)
    )


def test_silence_is_counted_from_the_last_pull_or_push_and_from_start_for_strangers() -> None:
    heard = {"eu-1": NOON - timedelta(minutes=10), "eu-2": NOON - timedelta(seconds=30)}
    watched = ["eu-1", "eu-2", "eu-3"]
    after = timedelta(minutes=5)
    assert silent_agents(heard, watched, NOON, after, NOON - timedelta(minutes=1)) == {
        "eu-1": NOON - timedelta(minutes=10)
    }  # eu-3 was never heard from, but the server started a minute ago
    later = NOON + timedelta(minutes=5)
    silent = silent_agents(heard, watched, later, after, NOON - timedelta(minutes=1))
    assert set(silent) == {"eu-1", "eu-2", "eu-3"}
    regions = {"eu-1": "eu", "eu-2": "eu", "eu-3": "eu"}
    events = changes({"eu-1": heard["eu-1"]}, silent, heard, regions, later)
    assert [(e["type"], e["agent"]) for e in events] == [
        ("agent_silent", "eu-2"), ("agent_silent", "eu-3"),
    ]  # fmt: skip
    back = changes(silent, {}, {**heard, "eu-1": later}, {"eu-1": "eu", "eu-2": "eu"}, later)
    assert [(e["type"], e["agent"]) for e in back] == [
        ("agent_recovered", "eu-1"), ("agent_recovered", "eu-2"),
    ]  # eu-3 left the config: nothing recovered  # fmt: skip


@pytest.mark.anyio
async def test_a_stopped_agent_is_announced_silent_then_recovered(
    repo: ConfigRepo, tmp_path: Path, hook: Receiver
) -> None:
    env = {"RECONCILER_ADMIN_TOKEN": ADMIN}
    state = tmp_path / "state.duckdb"
    options: dict[str, Any] = {"agent_silent_after": 1.0, "notify_urls": hook.url}
    async with serving(repo.path, state, env, **options) as (parts, client):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        transport = httpx.ASGITransport(app=parts.app)

        def agent() -> Agent:
            # Short held pulls: an agent that is running is heard from well within 1 s.
            values = settings(BASE_URL, tmp_path / "spool.sqlite", token=token, pull_wait=0.3)
            return Agent(values, api_transport=transport)

        async with running_agent(agent()):
            await eventually(lambda: delivered(hook, "agent_silent", "eu-2"), 20, "eu-2 silent")
            assert not delivered(hook, "agent_silent", "eu-1")  # it pulls all along
        await eventually(lambda: delivered(hook, "agent_silent", "eu-1"), 20, "eu-1 silent")
        listed = await client.get("/operator/agents", headers={"Authorization": f"Bearer {ADMIN}"})
        assert {a["name"]: a["silent"] for a in listed.json()["agents"]} == {
            "eu-1": True, "eu-2": True,
        }  # fmt: skip
        metrics = (await client.get("/metrics")).text
        assert "reconciler_agents_silent 2" in metrics
        async with running_agent(agent()):
            await eventually(lambda: delivered(hook, "agent_recovered", "eu-1"), 20, "eu-1 back")
        last_pull = parts.control.agents["eu-1"].last_pull
    assert last_pull is not None

    # Restarted: the last pull is remembered.
    async with serving(repo.path, state, env, **options) as (parts, _):
        await until_ready(parts)
        assert parts.control.agents["eu-1"].last_pull == last_pull
