"""Silent agents on the status site: the overview says which agents are silent and since
when, each region's report lists its own, with the server's threshold."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.server.main import running_parts
from reconciler.server.settings import load_settings
from reconciler.store.agent_activity import save_activity
from reconciler.store.db import open_state
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc, run_cli
from tests.inprocess import server_environ, until_ready
from tests.test_heartbeats import Clock


@pytest.fixture
def state(config_repo: ConfigRepo, tmp_path: Path) -> Path:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    agents = [agent_doc("eu-1", "eu"), agent_doc("eu-2", "eu"), agent_doc("us-1", "us")]
    config_repo.write("agents.yaml", "---\n".join(agents))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("fleet")
    path = tmp_path / "state.duckdb"
    applied = run_cli("apply", "--repo", config_repo.path, "--state", path, "--auto-approve")
    assert applied.code == 0, applied.err
    now = datetime.now(UTC)
    connection = open_state(path)
    assert connection is not None
    with connection:
        save_activity(
            connection,
            {
                "eu-1": (now - timedelta(seconds=20), now - timedelta(seconds=5)),
                "eu-2": (now - timedelta(hours=2), now - timedelta(hours=1)),  # silent
                "us-1": (now - timedelta(seconds=30), None),
            },
        )
    return path


def aside(page: str) -> str:
    found = re.search(r'<aside class="silent-agents".*?</aside>', page, re.S)
    return found.group(0) if found else ""


def test_a_site_build_shows_the_silent_agent_and_since_when(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    built = run_cli("site", "build", "--state", state, "--out", out, "--workers", "1")
    assert built.code == 0, built.err
    overview = aside((out / "index.html").read_text())
    assert "1 agent silent" in overview
    assert 'href="region-eu.html">eu-2</a>' in overview
    assert "eu-1" not in overview and "us-1" not in overview
    since = re.search(r'<time datetime="([^"]+)">', overview)
    assert since is not None  # the last time it was heard from: its push, an hour ago
    heard = datetime.strptime(since.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=59) < datetime.now(UTC) - heard < timedelta(minutes=61)
    region = aside((out / "region-eu.html").read_text())
    assert "1 agent of eu silent" in region and "<strong>eu-2</strong>" in region
    assert "last heard from" in region
    assert aside((out / "region-us.html").read_text()) == ""

    # A longer threshold than the silence: nothing to show.
    again = run_cli("site", "build", "--state", state, "--out", out, "--agent-silent-after", "7200")
    assert again.code == 0, again.err
    assert aside((out / "index.html").read_text()) == ""


@pytest.mark.anyio
async def test_the_servers_site_uses_the_servers_threshold(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("fleet")
    clock = Clock()
    environ = server_environ()
    flags = {"repo": str(config_repo.path), "state": tmp_path / "s.duckdb", "debounce": 0.05}
    settings = load_settings({**flags, "agent_silent_after": 60.0}, environ)
    async with running_parts(settings, environ, clock, lambda _: None) as parts:
        parts.loop.trigger("startup")
        await until_ready(parts)
        out = tmp_path / "site"
        await parts.controllers.site.build(out)
        assert aside((out / "index.html").read_text()) == ""  # configured just now
        clock.advance(120)  # eu-1 never pulled: silent a minute after it was configured
        await parts.controllers.site.build(out)
        overview = aside((out / "index.html").read_text())
        assert "1 agent silent" in overview and "eu-1" in overview
        assert "never heard from" in overview
