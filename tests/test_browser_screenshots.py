"""Screenshots of browser checks: posted apart from results, bounded, shown on the canary's
site page; end to end, a real agent with --allow-browser-checks and Chromium."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import duckdb
import pytest

from tests.agentproc import AgentProcess
from tests.conftest import ConfigRepo, agent_doc, region_doc, run_cli
from tests.inprocess import InProcessServer, running_in_process
from tests.server import running_server, wait_for
from tests.test_checks_browser import needs_chromium, site  # noqa: F401 (a fixture)

STARTED = "2030-01-02T03:04:05+00:00"


def _png(width: int = 2, height: int = 2) -> bytes:
    """A small valid PNG (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _browser_canary(
    url: str, script: str, schedule: str = "@every 1m", timeout: str = "15s"
) -> str:
    return f"""
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: shop
spec:
  schedule: '{schedule}'
  agentSelector: ['eu-1']
  browser:
    - name: checkout
      url: {url}
      timeout: {timeout}
      script: |
        {script}
"""


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/shop.yaml", _browser_canary("http://127.0.0.1:9/", "assert False"))
    config_repo.commit("a browser check")
    return config_repo


def _post(server: InProcessServer, body: bytes, check: str = "checkout", started: str = STARTED):
    return server.client.post(
        "/api/agent/screenshots",
        params={"canary": "default/shop@eu-1", "check": check, "started_at": started},
        content=body,
        headers={"Authorization": f"Bearer {server.token('eu-1')}", "Content-Type": "image/png"},
    )


def test_a_posted_screenshot_is_on_the_canary_page(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    picture = _png()
    with running_in_process(repo.path, state) as server:
        server.wait_ready()
        assert _post(server, picture).status_code == 200
        not_png = _post(server, b"GIF89a....")
        assert not_png.status_code == 400 and "not a PNG" in not_png.text
        other = _post(server, picture, check="nope")
        assert other.status_code == 400 and "no browser check 'nope'" in other.text
        naive = _post(server, picture, started="2030-01-02T03:04:05")
        assert naive.status_code == 400 and "started_at" in naive.text
        huge = _post(server, picture + b"\x00" * (1024 * 1024))
        assert huge.status_code == 413
        # Only the newest few per check are kept.
        for second in range(10, 18):
            assert _post(server, picture, started=f"2030-01-02T03:04:{second}+00:00").is_success
    with duckdb.connect(str(state), read_only=True) as connection:
        kept = connection.execute("SELECT count(*), max(started_at) FROM screenshots").fetchone()
    assert kept is not None and kept[0] == 5
    out = tmp_path / "site"
    assert run_cli("site", "build", "--state", state, "--out", out, "-q").code == 0
    page = (out / "canary" / "default.shop.html").read_text()
    assert "Browser check screenshots" in page
    [src] = re.findall(r'<img src="([^"]+)"', page)
    assert src.startswith("../screenshot/default.shop/") and src.endswith(".png")
    assert (out / "canary" / src).resolve().read_bytes() == picture
    assert "03:04:17" in page  # the newest one


@pytest.mark.slow
@needs_chromium
def test_a_real_agent_ships_the_screenshot_of_a_failing_script(
    config_repo: ConfigRepo,
    tmp_path: Path,
    site: str,  # noqa: F811 (the fixture)
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    failing = "assert await page.title() == 'Checkout', 'not the checkout page'"
    config_repo.write(
        "canaries/shop.yaml", _browser_canary(f"{site}/", failing, "@every 10s", "8s")
    )
    config_repo.commit("a failing browser check")
    state = tmp_path / "state.duckdb"
    with running_server(config_repo.path, state) as server:
        server.wait_ready()
        agent = AgentProcess(
            server.url, server.token("eu-1"), tmp_path / "spool.sqlite", "--allow-browser-checks"
        )
        try:
            wait_for(lambda: agent.metric("screenshots_sent_total") >= 1, 60, "a screenshot")
            wait_for(lambda: agent.metric("rows_shipped_total") >= 1, 30, "a result row")
        finally:
            assert agent.stop() == 0
    with duckdb.connect(str(state), read_only=True) as connection:
        row = connection.execute(
            "SELECT status, message, phases FROM results WHERE check_type = 'browser' LIMIT 1"
        ).fetchone()
        shots = connection.execute("SELECT count(*) FROM screenshots").fetchone()
    assert row is not None and row[0] == "fail"
    assert row[1] == "script line 1: AssertionError: not the checkout page"
    assert '"load_ms"' in str(row[2])
    assert shots is not None and shots[0] >= 1
    out = tmp_path / "site"
    assert run_cli("site", "build", "--state", state, "--out", out, "-q").code == 0
    page = (out / "canary" / "default.shop.html").read_text()
    [src] = re.findall(r'<img src="([^"]+)"', page)
    assert (out / "canary" / src).resolve().read_bytes().startswith(b"\x89PNG")
