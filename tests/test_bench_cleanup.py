"""The benchmarks leave nothing behind: `bench/agent_load.py` stops a target that never
answers, and `bench/webhook.py` stopped by SIGTERM stops its server and removes its
temporary directory."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT
from tests.waiting import wait_for

BENCH = ROOT / "bench"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def agent_load() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("agent_load")
    finally:
        sys.path.remove(str(BENCH))


def test_a_target_that_never_answers_is_stopped(
    agent_load: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "fake-nginx.pid"
    fake = tmp_path / "fake-nginx"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setattr(agent_load, "NGINX", fake)
    monkeypatch.setattr(agent_load, "TARGET_WAIT_SECONDS", 0.5)
    base = tmp_path / "work"
    base.mkdir()
    with pytest.raises(SystemExit, match="timed out .* waiting for nginx"):
        agent_load.start_target("nginx", base)
    pid = int(pid_file.read_text())
    wait_for(lambda: not alive(pid), 10, "the silent target to be stopped")


@pytest.mark.slow
def test_webhook_bench_stopped_by_sigterm_removes_its_directory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    bench = subprocess.Popen(
        [sys.executable, str(BENCH / "webhook.py"), "--commits", "100000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The server is up once it has written its state file into the temporary directory.
        wait_for(lambda: any(tmp_path.glob("reconcile-webhook-*/state.duckdb*")), 60, "serve")
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.glob("reconcile-webhook-*")) == []
