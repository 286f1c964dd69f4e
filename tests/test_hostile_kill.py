"""`kill -9` at bad moments (slow tier): `serve` during ingest loses no acknowledged row and
leaves a server file that other commands see through; `apply` never leaves half a plan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from reconciler.server.address_file import server_file
from tests import children
from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc
from tests.server import ServerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

ROWS_PER_BATCH = 200
KILLS = 3
ROWS_PER_KILL = 6000


class Sender:
    """Posts batches of new rows until the server stops answering; keeps what was acknowledged."""

    def __init__(self, url: str, token: str, first: datetime, offset: int) -> None:
        self.url, self.token, self.first, self.next = url, token, first, offset
        self.acknowledged: list[datetime] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _batch(self) -> list[dict[str, Any]]:
        rows = []
        for _ in range(ROWS_PER_BATCH):
            started = self.first + timedelta(microseconds=self.next)
            self.next += 1
            rows.append(
                {
                    "canary": "default/web@eu-1",
                    "check": "check",
                    "started_at": started.isoformat(),
                    "duration_ms": 5.0,
                    "status": "pass",
                    "code": 200,
                }
            )
        return rows

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while True:
                rows = self._batch()
                try:
                    response = client.post(
                        "/api/agent/results", json={"results": rows}, headers=headers
                    )
                except httpx.HTTPError:
                    return  # killed: this batch's fate is unknown, so it is not counted
                answer = response.json()
                if response.status_code != 200 or answer["dropped"]:
                    self.error = f"{response.status_code}: {response.text}"
                    return
                self.acknowledged.extend(datetime.fromisoformat(r["started_at"]) for r in rows)


def _stored(state: Path) -> set[datetime]:
    with duckdb.connect(str(state), read_only=True) as connection:
        found = connection.execute("SELECT started_at FROM results WHERE agent = 'eu-1'").fetchall()
    return {row[0].astimezone(UTC) for row in found}


def test_serve_killed_during_ingest_loses_no_acknowledged_row(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("initial")
    state = tmp_path / "state.duckdb"
    first = datetime.now(UTC) - timedelta(minutes=1)
    acknowledged: list[datetime] = []
    token = None
    for kill in range(KILLS):
        server = ServerProcess(config_repo.path, state)
        try:
            server.wait_ready()
            token = token or server.token("eu-1")
            sender = Sender(server.url, token, first, len(acknowledged) + kill * 10**6)
            goal = len(sender.acknowledged) + ROWS_PER_KILL
            wait_for(
                lambda s=sender, g=goal: len(s.acknowledged) >= g or s.error is not None,
                60,
                "rows acknowledged",
            )
            assert sender.error is None, sender.error
            os.kill(server.process.pid, signal.SIGKILL)
            sender.thread.join(30)
            assert not sender.thread.is_alive()
            acknowledged.extend(sender.acknowledged)
        finally:
            server.stop()
        info = server_file(state)
        assert info.exists(), "kill -9 leaves the server file behind"
        if kill == 0:
            # The commands that would ask the server see that it is gone, and work.
            command = [sys.executable, "-m", "reconciler", "canary", "status", "--state", state]
            status = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert status.returncode == 0, status.stderr
            assert f"note: ignoring {info}" in status.stderr
            assert "not running" in status.stderr
        info.unlink()  # the test helper reads the address as soon as the file exists
    stored = _stored(state)
    lost = [moment for moment in acknowledged if moment not in stored]
    assert len(acknowledged) >= KILLS * ROWS_PER_KILL
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged rows lost"


# -- apply ---------------------------------------------------------------------------------------


def _plan(repo: ConfigRepo, state: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "reconciler", "plan", "--repo", repo.path, "--state", state]
    result = subprocess.run(
        [*command, "--format", "json"], cwd=ROOT, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def _apply(repo: ConfigRepo, state: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "reconciler", "apply", "--repo", repo.path, "--state", state]
    return children.popen(
        [*command, "--auto-approve", "-q"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _big_config(repo: ConfigRepo, canaries: int, agents: int) -> None:
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", "---\n".join(agent_doc(f"eu-{i}", "eu") for i in range(agents)))
    documents = [canary_doc(f"web-{i}", url=f"https://example.com/{i}") for i in range(canaries)]
    repo.write("canaries/web.yaml", "---\n".join(documents))


def test_apply_killed_at_any_moment_leaves_all_or_nothing(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.commit("small")
    state = tmp_path / "state.duckdb"
    base = _apply(config_repo, state)
    assert base.wait(120) == 0, base.stderr
    _big_config(config_repo, canaries=200, agents=10)
    config_repo.commit("big")
    planned = _plan(config_repo, state)
    assert planned["summary"]["add"] > 2000
    # How long a whole apply takes here, on a copy, to spread the kills over it.
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(state.read_bytes())
    started = time.monotonic()
    assert _apply(config_repo, copy).wait(300) == 0
    whole = time.monotonic() - started
    outcomes = []
    for fraction in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
        applying = _apply(config_repo, state)
        finished = _wait_or_kill(applying, whole * fraction)
        outcomes.append("finished" if finished else "killed")
        after = _plan(config_repo, state)
        if after["summary"] == {"add": 0, "change": 0, "destroy": 0}:
            break  # applied whole: later kills have nothing left to interrupt
        assert after["summary"] == planned["summary"], f"half applied after {fraction}"
        assert after["state"]["serial"] == planned["state"]["serial"]
    assert outcomes.count("killed") >= 3, outcomes
    finish = _apply(config_repo, state)
    assert finish.wait(300) == 0, finish.stderr
    assert _plan(config_repo, state)["summary"] == {"add": 0, "change": 0, "destroy": 0}


def _wait_or_kill(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Let `process` run for `seconds`, then SIGKILL it; whether it had finished by itself."""
    try:
        process.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        return False
