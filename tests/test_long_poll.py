"""Config pushed, not waited for: a pull held until the agent's config changes (a long poll),
answered at once on a commit or a revoked token, and agents that fall back to polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from agent.runtime import Agent
from reconciler.server.main import Parts
from tests import httpd
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.inprocess import BASE_URL, serving, until_ready
from tests.test_agent_shipping import running_agent, settings
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
spec:
  schedule: '@never'
  agentSelector: ['eu-1']
  http:
    - name: check
      url: http://127.0.0.1:9/
"""
HELD = 20.0  # a wait far longer than any answer below should take


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/a.yaml", CANARY.format(name="a"))
    config_repo.commit("initial")
    return config_repo


async def current_etag(client: httpx.AsyncClient, token: str) -> str:
    first = await client.get("/api/agent/targets", headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 200, first.text
    return first.headers["etag"]


async def being_held(parts: Parts, pulled: datetime | None) -> None:
    """Until the pull started after `pulled` was seen by the server (it then holds it: the
    pull is recorded right before the wait begins)."""
    await eventually(
        lambda: parts.control.agents["eu-1"].last_pull != pulled, 10, "the pull to be held"
    )


async def test_a_held_pull_answers_the_moment_a_commit_changes_the_config(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        etag = await current_etag(client, token)
        headers = {"Authorization": f"Bearer {token}", "If-None-Match": etag}
        started = time.monotonic()
        pulled = parts.control.agents["eu-1"].last_pull
        held = asyncio.create_task(
            client.get("/api/agent/targets", params={"wait": HELD}, headers=headers)
        )
        await being_held(parts, pulled)  # before the commit lands
        repo.write("canaries/b.yaml", CANARY.format(name="b"))
        repo.commit("add b")
        answer = await asyncio.wait_for(held, HELD + 10)
        assert answer.status_code == 200 and answer.headers["etag"] != etag
        assert "default/b@eu-1" in answer.text
        assert answer.headers["x-pull-wait"] == "20"
        assert time.monotonic() - started < HELD  # woken by the commit, not by the wait's end

        # Nothing changes: the wait ends with 304, saying the server held it.
        quiet = await client.get(
            "/api/agent/targets",
            params={"wait": "0.2"},
            headers={**headers, "If-None-Match": answer.headers["etag"]},
        )
        assert quiet.status_code == 304 and quiet.headers["x-pull-wait"] == "0.2"


async def test_a_held_pull_of_a_revoked_agent_is_refused_at_once(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        etag = await current_etag(client, token)
        pulled = parts.control.agents["eu-1"].last_pull
        held = asyncio.create_task(
            client.get(
                "/api/agent/targets",
                params={"wait": HELD},
                headers={"Authorization": f"Bearer {token}", "If-None-Match": etag},
            )
        )
        await being_held(parts, pulled)
        started = time.monotonic()
        await parts.control.mint_token("eu-1")  # rotated: the old token stops working
        answer = await asyncio.wait_for(held, HELD + 10)
        assert answer.status_code == 401 and time.monotonic() - started < HELD

        bad = await client.get(
            "/api/agent/targets",
            params={"wait": "3600"},
            headers={"Authorization": f"Bearer {await parts.control.mint_token('eu-1')}"},
        )
        assert bad.status_code == 400 and "wait: expected seconds from 0 to 60" in bad.text


async def test_an_agent_runs_a_commit_without_waiting_for_its_pull_interval(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, _):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        transport = httpx.ASGITransport(app=parts.app)
        # A pull every 10 minutes: only a held pull can bring the commit within the wait below.
        agent = Agent(
            settings(BASE_URL, tmp_path / "spool.sqlite", token=token, pull_interval=600.0),
            api_transport=transport,
        )
        async with running_agent(agent):
            await eventually(lambda: agent.scheduler.canaries == ["default/a@eu-1"], 20, "a")
            repo.write("canaries/b.yaml", CANARY.format(name="b"))
            repo.commit("add b")
            await eventually(
                lambda: "default/b@eu-1" in agent.scheduler.canaries, HELD, "b, pushed"
            )


class _OldServer(BaseHTTPRequestHandler):
    """A control plane from before long polls: answers every pull at once."""

    pulls: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).pulls.append(self.path)
        if self.headers.get("If-None-Match") == '"v1"':
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
            return
        body = b'{"agent": "eu-1", "region": "eu", "canaries": []}'
        self.send_response(200)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def old_server() -> Iterator[str]:
    _OldServer.pulls = []
    with httpd.serving(_OldServer) as server:
        yield httpd.url(server)


async def test_an_agent_polls_a_server_that_does_not_hold_pulls(
    old_server: str, tmp_path: Path
) -> None:
    agent = Agent(settings(old_server, tmp_path / "spool.sqlite", pull_interval=600.0))
    async with running_agent(agent):
        await eventually(lambda: len(_OldServer.pulls) >= 2, 20, "two pulls")
        # The second pull asked to be held, came back at once without the header: the agent
        # goes back to its pull interval instead of asking again in a loop.
        assert "wait=30" in _OldServer.pulls[1] and not agent.server_holds_pulls
