"""Nothing stops silently: a failure in a background loop of `serve` is logged with its
traceback, counted in /metrics, shown in /api/v1/status and flagged in /readyz, and the loop
goes on; a commit that breaks the reconcile is refused and the next good one applies, also
after a restart on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from agent.metrics import Metrics
from reconciler.gateway.memory import MemoryGateway
from reconciler.server.notify import Hook, Notifier
from reconciler.server.reconcile_loop import RETRY, ReconcileLoop
from reconciler.server.supervise import Supervisor, backoff
from schemas.route import RouteSpec
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.test_notify import Receiver
from tests.waiting import eventually, holds_within, wait_for

# Passes `validate` today, and its agent config cannot be encoded (an integer beyond 64 bits):
# the reconcile loop died on it without a word.
BAD_CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: huge
spec:
  schedule: '@never'
  agentSelector: ['*']
  http:
    - name: check
      url: http://127.0.0.1:9/
      timeout: 9999999999999999999999h
"""

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  traffic_split:
    - name: stable
      weight: 90
      backends: [{url: 'http://127.0.0.1:9001'}]
    - name: canary
      weight: 10
      backends: [{url: 'http://127.0.0.1:9003'}]
  canary:
    canary_group: canary
    auto_start: true
    steps:
      - weight: 10
        pause: 1m
      - weight: 100
    analysis:
      interval: 30s
"""


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/good"))
    config_repo.commit("initial")
    return config_repo


class _Records(logging.Handler):
    """The records of the loops' logger, tracebacks included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self, loop: str) -> list[str]:
        formatter = logging.Formatter()
        return [
            formatter.formatException(r.exc_info)
            for r in self.records
            if r.exc_info and r.getMessage().startswith(f"{loop} loop failed")
        ]


@pytest.fixture
def loop_log() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("reconciler.server.loops")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def loop_errors(server: InProcessServer, loop: str) -> float:
    text = server.client.get("/metrics").text
    found = re.search(rf'^reconciler_loop_errors_total\{{loop="{loop}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


def urls(server: InProcessServer, token: str) -> list[str]:
    body = server.client.get("/api/agent/targets", headers={"Authorization": f"Bearer {token}"})
    assert body.status_code == 200, body.text
    return sorted(c["checks"][0]["url"] for c in body.json()["canaries"])


def attempted(server: InProcessServer, sha: str) -> bool:
    attempt = server.status()["last_attempt"]
    return bool(attempt and attempt["revision"] and attempt["revision"]["sha"] == sha)


def test_a_commit_that_breaks_the_reconcile_is_refused_and_the_next_good_one_applies(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    with running_in_process(repo.path, state) as server:
        server.wait_ready()
        good = server.status()["current_revision"]["sha"]
        token = server.token("eu-1")
        repo.write("canaries/huge.yaml", BAD_CANARY)
        bad = repo.commit("a timeout beyond any integer")
        wait_for(lambda: attempted(server, bad), 10, "the bad commit to be attempted")
        status = server.status()
        assert status["current_revision"]["sha"] == good, "the last good revision serves"
        assert status["last_attempt"]["applied"] is False
        assert status["last_attempt"]["errors"], "the refusal says why"
        assert urls(server, token) == ["https://example.com/good"]

    # A restart on top of the bad commit starts, and serves the last good revision.
    with running_in_process(repo.path, state) as server:
        wait_for(lambda: attempted(server, bad), 10, "the bad commit to be attempted again")
        assert server.status()["current_revision"]["sha"] == good
        assert urls(server, token) == ["https://example.com/good"]

        repo.remove("canaries/huge.yaml")
        repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/fixed"))
        fixed = repo.commit("fix")
        wait_for(
            lambda: server.status()["current_revision"]["sha"] == fixed, 10, "the fix to apply"
        )
        assert urls(server, token) == ["https://example.com/fixed"]


def test_a_failing_reconcile_is_logged_counted_shown_and_the_loop_goes_on(
    repo: ConfigRepo, tmp_path: Path, loop_log: _Records
) -> None:
    bare = tmp_path / "config.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    with running_in_process(bare, tmp_path / "state.duckdb", poll_interval=3600) as server:
        server.wait_ready()
        assert loop_errors(server, "reconcile") == 0
        assert server.client.get("/readyz").json()["loops_ok"] is True

        # The remote goes away: every fetch raises.
        moved = bare.rename(tmp_path / "moved.git")
        assert server.webhook().status_code == 202
        wait_for(lambda: loop_errors(server, "reconcile") == 1, 10, "the failure to be counted")
        [traceback] = loop_log.tracebacks("reconcile")
        assert "GitSourceError" in traceback and "refresh" in traceback
        loop = server.status()["loops"]["reconcile"]
        assert (loop["ok"], loop["errors"], loop["consecutive_errors"]) == (False, 1, 1)
        assert loop["last_error"].startswith(f"reading git repository {bare}: GitSourceError")
        assert loop["last_error_at"] is not None
        ready = server.client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "loops_ok": False})

        # It comes back with a new commit: the same loop applies it.
        moved.rename(bare)
        repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/back"))
        sha = repo.commit("after the outage")
        repo.git("push", "-q", str(bare), "main")
        assert server.webhook().status_code == 202
        wait_for(lambda: server.status()["current_revision"]["sha"] == sha, 10, "the new commit")
        assert server.status()["loops"]["reconcile"]["ok"] is True
        assert server.client.get("/readyz").json()["loops_ok"] is True
        assert loop_errors(server, "reconcile") == 1, "the count stays: errors since start"


class _CrashingGateway(MemoryGateway):
    """A gateway whose adapter crashes (not a refusal) until it is mended."""

    def __init__(self) -> None:
        super().__init__()
        self.crashing = True

    def apply(self, route: str, spec: RouteSpec, weights: Mapping[str, int]) -> None:
        if self.crashing:
            raise RuntimeError("the gateway adapter crashed")
        super().apply(route, spec, weights)


def test_a_controller_whose_gateway_raises_reports_it_and_recovers(
    repo: ConfigRepo, tmp_path: Path, loop_log: _Records
) -> None:
    repo.write("routes/checkout.yaml", ROUTE)
    repo.commit("a route")
    gateway = _CrashingGateway()
    with running_in_process(repo.path, tmp_path / "state.duckdb", gateway=gateway) as server:
        server.wait_ready()
        wait_for(lambda: loop_errors(server, "canary-controller") >= 1, 10, "the failure counted")
        assert (
            "RuntimeError: the gateway adapter crashed"
            in loop_log.tracebacks("canary-controller")[0]
        )
        loop = server.status()["loops"]["canary-controller"]
        assert loop["ok"] is False
        assert loop["last_error"] == "route checkout: RuntimeError: the gateway adapter crashed"
        assert server.client.get("/readyz").json()["loops_ok"] is False

        gateway.crashing = False
        wait_for(lambda: gateway.weights("checkout") is not None, 10, "weights after recovery")
        assert gateway.weights("checkout") == {"stable": 90, "canary": 10}
        wait_for(lambda: server.status()["loops"]["canary-controller"]["ok"], 10, "recovered")


def test_an_idle_canary_controller_does_not_tick_every_interval(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    repo.write("routes/checkout.yaml", ROUTE)
    repo.commit("a route")
    gateway = MemoryGateway()
    env = {"RECONCILER_CANARY_INTERVAL": "0.02"}
    with running_in_process(repo.path, tmp_path / "state.duckdb", env, gateway=gateway) as server:
        server.wait_ready()
        wait_for(lambda: gateway.weights("checkout") == {"stable": 90, "canary": 10}, 10, "start")
        deployments = server.parts.controllers.deployments
        before = deployments.passes
        # Twenty intervals with nothing due (the first evaluation is 30 s away): no pass.
        assert not holds_within(lambda: deployments.passes != before, 0.4)

        # An action wakes it at once.
        assert server.admin("POST", "/canary/checkout/promote").status_code == 200
        wait_for(lambda: gateway.weights("checkout") == {"stable": 0, "canary": 100}, 5, "promote")


@pytest.mark.anyio
async def test_a_loop_body_that_raises_is_restarted_with_growing_backoff() -> None:
    metrics = Metrics()
    loops = Supervisor(metrics, lambda: datetime.now(UTC), lambda: ["s3cret-token"], 0.01)
    runs: list[int] = []

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) < 4:
            raise ValueError("bad value s3cret-token")

    await asyncio.wait_for(loops.run("watcher", body), 5)
    assert len(runs) == 4, "restarted after each failure, finished when the body returned"
    status = loops.status()["watcher"]
    assert (status["errors"], status["consecutive_errors"]) == (3, 3)
    assert status["last_error"] == "ValueError: bad value ***", "secrets never shown"
    assert 'reconciler_loop_errors_total{loop="watcher"} 3' in metrics.render()
    assert [backoff(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert loops.failing == ["watcher"]
    loops.succeeded("watcher")
    assert loops.failing == []


def test_status_needs_the_read_token_and_readyz_shows_only_a_flag(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    env = {"RECONCILER_READ_TOKEN": "read-token"}
    with running_in_process(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        assert server.client.get("/api/v1/status").status_code == 401
        headers = {"Authorization": "Bearer read-token"}
        loops = server.client.get("/api/v1/status", headers=headers).json()["loops"]
        assert {"reconcile", "ingest-writer", "canary-controller", "incidents"} <= loops.keys()
        assert set(server.client.get("/readyz").json()) == {"status", "loops_ok"}


@pytest.mark.anyio
async def test_a_reconcile_that_raises_is_tried_again_after_the_backoff() -> None:
    loops = Supervisor(Metrics(), lambda: datetime.now(UTC), first_backoff=0.01)
    calls: list[str] = []

    async def reconcile(reasons: str) -> None:
        calls.append(reasons)
        if len(calls) == 1:
            raise OSError("the state file's disk is full")

    loop = ReconcileLoop(reconcile, 0.0, loops)
    task = asyncio.create_task(loop.run())
    try:
        loop.trigger("file change")
        await eventually(lambda: len(calls) == 2, 5, "the retry")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert calls == ["file change", RETRY]
    assert loops.status()["reconcile"]["last_error"] == "OSError: the state file's disk is full"


def test_a_site_rebuild_that_fails_is_reported_and_tried_again(
    repo: ConfigRepo, tmp_path: Path, loop_log: _Records
) -> None:
    site = tmp_path / "site"
    site.write_text("a file where the site's directory should be\n")
    with running_in_process(
        repo.path, tmp_path / "state.duckdb", site_dir=site, site_interval=0.2
    ) as server:
        server.wait_ready()
        wait_for(lambda: loop_errors(server, "site-rebuilds") >= 1, 20, "the failure counted")
        assert loop_log.tracebacks("site-rebuilds")
        assert server.status()["loops"]["site-rebuilds"]["ok"] is False

        site.unlink()
        wait_for(lambda: (site / "index.html").exists(), 20, "a site once the path is free")
        wait_for(lambda: server.status()["loops"]["site-rebuilds"]["ok"], 5, "recovered")


def _result_row(started: datetime) -> dict[str, object]:
    return {
        "canary": "default/web@eu-1",
        "check": "check",
        "started_at": started.isoformat(),
        "duration_ms": 12.5,
        "status": "pass",
        "code": 200,
    }


def test_an_ingest_write_that_fails_is_reported_and_the_writer_goes_on(
    repo: ConfigRepo, tmp_path: Path, loop_log: _Records
) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {server.token('eu-1')}"}
        state = server.parts.control.state

        def rename(old: str, new: str) -> None:
            server.call(
                lambda: state.write(lambda c: c.execute(f"ALTER TABLE {old} RENAME TO {new}"))
            )

        # The results table goes missing under the server: the insert raises.
        rename("results", "results_elsewhere")
        now = datetime.now(UTC)
        body = {"results": [_result_row(now - timedelta(seconds=3))]}
        # A real server answers 500; the in-process transport hands the app's error over.
        with pytest.raises(Exception, match="results does not exist"):
            server.client.post("/api/agent/results", headers=headers, json=body)
        wait_for(lambda: loop_errors(server, "ingest-writer") == 1, 10, "the failure counted")
        assert "results" in loop_log.tracebacks("ingest-writer")[0]
        assert server.status()["loops"]["ingest-writer"]["ok"] is False

        rename("results_elsewhere", "results")
        body = {"results": [_result_row(now - timedelta(seconds=2))]}
        stored = server.client.post("/api/agent/results", headers=headers, json=body)
        assert (stored.status_code, stored.json()["accepted"]) == (200, 1)
        assert server.status()["loops"]["ingest-writer"]["ok"] is True


LOCAL_CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: self
spec:
  schedule: '@every 1s'
  agentSelector: ['local']
  http:
    - name: check
      url: http://127.0.0.1:9/
      timeout: 500ms
"""


def test_local_results_that_cannot_be_stored_are_kept_and_stored_later(
    repo: ConfigRepo, tmp_path: Path, loop_log: _Records
) -> None:
    repo.write("canaries/self.yaml", LOCAL_CANARY)
    repo.commit("a local canary")
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        state = server.parts.control.state

        def execute(sql: str) -> object:
            return server.call(lambda: state.write(lambda c: c.execute(sql).fetchall()))

        execute("ALTER TABLE results RENAME TO results_elsewhere")
        outage_began = datetime.now(UTC)
        # Two failed stores: the rows refused the second time include a check that started
        # after the outage began (checks run every second; the tries are further apart).
        # After one failure only, the refused rows may all have started just before it.
        wait_for(lambda: loop_errors(server, "local-agent") >= 2, 15, "two failed stores")
        assert server.status()["loops"]["local-agent"]["ok"] is False
        execute("ALTER TABLE results_elsewhere RENAME TO results")
        restored = datetime.now(UTC)

        def kept() -> int:
            found = server.call(
                lambda: state.read(
                    lambda c: c.execute(
                        "SELECT count(*) FROM results WHERE agent = 'local'"
                        " AND started_at BETWEEN ? AND ?",
                        [outage_began, restored],
                    ).fetchone()
                )
            )
            return int(found[0]) if found else 0

        wait_for(lambda: kept() > 0, 15, "the results run during the outage to be stored")
        wait_for(lambda: server.status()["loops"]["local-agent"]["ok"], 10, "recovered")


def test_an_event_a_hook_cannot_be_sent_does_not_stop_the_ones_after_it(
    loop_log: _Records,
) -> None:
    receiver = Receiver(failures=0)
    metrics = Metrics()
    loops = Supervisor(metrics, lambda: datetime.now(UTC))

    async def scenario() -> None:
        notifier = Notifier(
            [Hook(receiver.url)], None, metrics, lambda: datetime.now(UTC), loops=loops
        )
        notifier.start()
        notifier.send({"type": "canary_step", "weights": {1, 2}})  # a set: not JSON
        notifier.send({"type": "canary_completed", "route": "checkout"})
        await notifier.stop(wait_seconds=10)

    try:
        asyncio.run(scenario())
    finally:
        receiver.server.shutdown()
    assert [orjson.loads(body)["type"] for _, body in receiver.received] == ["canary_completed"]
    assert loops.status()["notify"]["errors"] == 1
    assert "TypeError" in loop_log.tracebacks("notify")[0]
    text = metrics.render()
    assert 'reconciler_notifications_total{outcome="failed"} 1' in text
    assert 'reconciler_loop_errors_total{loop="notify"} 1' in text
