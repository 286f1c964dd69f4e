"""Heartbeat checks: a job's ping keeps its canary passing, a missed one is a failed run (and,
with an incident policy, an incident); tokens are minted, rotated and survive a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from reconciler.core.heartbeats import HeartbeatTarget, missed_deadlines
from reconciler.server.heartbeats import Heartbeats
from reconciler.server.main import Parts, running_parts
from reconciler.server.settings import load_settings
from reconciler.store.heartbeats import ensure_table, load_heartbeats, record_start
from tests.conftest import ROOT, ConfigRepo, run_cli
from tests.inprocess import BASE_URL, server_environ, until_ready
from tests.server import ADMIN_TOKEN, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: backup
  namespace: ops
spec:
  incidentPolicy: any
  failureThreshold: 1
  successThreshold: 1
  heartbeat:
    - name: nightly
      period: 1m
      grace: 30s
"""
KEY = {"canary": "ops/backup", "check": "nightly"}
T0 = datetime(2026, 12, 4, 12, tzinfo=UTC)


class Clock:
    """The server's clock: the wall clock moved by what a test asks, so no test sleeps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@contextlib.asynccontextmanager
async def serving(
    repo: Path, state: Path, clock: Clock
) -> AsyncIterator[tuple[Parts, httpx.AsyncClient, Heartbeats]]:
    environ = server_environ()
    flags = {"repo": str(repo), "state": state, "debounce": 0.05}
    async with running_parts(
        load_settings(flags, environ), environ, clock, lambda _: None
    ) as parts:
        parts.control.on_publish.remove(parts.controllers.site.wake)
        parts.loop.trigger("startup")
        await until_ready(parts)
        transport = httpx.ASGITransport(app=parts.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert parts.controllers.heartbeats is not None
            yield parts, client, parts.controllers.heartbeats


@pytest.fixture
def repo(config_repo: ConfigRepo) -> Path:
    config_repo.write("canaries/backup.yaml", CANARY)
    config_repo.commit("a heartbeat")
    return config_repo.path


async def rows(parts: Parts) -> list[tuple[Any, ...]]:
    """The heartbeat's stored rows, oldest first: (agent, status, message)."""

    def query(connection: Any) -> list[tuple[Any, ...]]:
        return list(
            connection.execute(
                "SELECT agent, status, message FROM results WHERE canary = 'ops/backup@local' "
                "AND check_name = 'nightly' ORDER BY started_at"
            ).fetchall()
        )

    return await parts.control.state.read(query)


async def mint(client: httpx.AsyncClient) -> str:
    answer = await client.post("/operator/heartbeats/token", json=KEY, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    token = str(answer.json()["token"])
    assert answer.json()["ping_path"] == f"/api/v1/heartbeat/{token}"
    return token


# -- the decision --------------------------------------------------------------------------


def test_a_deadline_is_missed_once_period_and_grace_pass_then_every_period() -> None:
    hourly = HeartbeatTarget(("ops/backup", "nightly"), "ops/backup@local", 3600, 600)
    at = [T0 + timedelta(minutes=m) for m in (69, 70, 190)]
    assert missed_deadlines(hourly, T0, at[0]).deadlines == ()
    assert missed_deadlines(hourly, T0, at[1]).deadlines == (at[1],)
    later = missed_deadlines(hourly, T0, at[2])
    assert later.deadlines == (at[1], at[1] + timedelta(hours=1), at[1] + timedelta(hours=2))
    # Stored already up to the second one: only the third is new.
    assert missed_deadlines(hourly, T0, at[2], after=later.deadlines[1]).deadlines == (
        later.deadlines[2],
    )
    # A week of silence stores the newest deadlines and counts the rest.
    week = missed_deadlines(hourly, T0, T0 + timedelta(days=7), limit=5)
    assert len(week.deadlines) == 5 and week.skipped == 7 * 24 - 1 - 5


# -- validation ----------------------------------------------------------------------------


def test_a_heartbeat_canary_is_validated_with_file_and_line(config_repo: ConfigRepo) -> None:
    config_repo.write(
        "canaries/bad.yaml",
        textwrap.dedent(
            """\
            apiVersion: canary-reconciler/v1
            kind: Canary
            metadata:
              name: bad
            spec:
              schedule: '@every 1m'
              agentSelector: ['eu-*']
              heartbeat:
                - name: job
                  period: 1h
            """
        ),
    )
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "bad.yaml:6:" in result.out and "a heartbeat canary has no schedule" in result.out
    assert "bad.yaml:7:" in result.out and "leave agentSelector out" in result.out


def test_a_too_short_period_and_a_negative_grace_are_refused(config_repo: ConfigRepo) -> None:
    config_repo.write("canaries/backup.yaml", CANARY.replace("period: 1m", "period: 500ms"))
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "backup.yaml:12:" in result.out
    assert "period '500ms' is too short: at least 1s" in result.out
    assert "minimum heartbeat period" in result.out
    config_repo.write("canaries/backup.yaml", CANARY.replace("grace: 30s", "grace: -1s"))
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "spec.heartbeat[0].grace: invalid duration '-1s'" in result.out


# -- the server ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pings_keep_it_passing_and_a_missed_ping_fails_and_opens_an_incident(
    repo: Path, tmp_path: Path
) -> None:
    clock = Clock()
    async with serving(repo, tmp_path / "state.duckdb", clock) as (parts, client, heartbeats):
        token = await mint(client)
        answer = await client.get(f"/api/v1/heartbeat/{token}")
        assert answer.status_code == 200 and answer.json()["outcome"] == "stored"
        clock.advance(60)
        assert await heartbeats.look() == 0  # on time so far
        answer = await client.post(f"/api/v1/heartbeat/{token}", content=b"42 tables dumped")
        assert answer.status_code == 200
        clock.advance(89)
        assert await heartbeats.look() == 0  # within period + grace of the last ping
        assert await rows(parts) == [
            ("local", "pass", None), ("local", "pass", "42 tables dumped"),
        ]  # fmt: skip
        await parts.controllers.incidents.tick()
        assert parts.controllers.incidents.open_count == 0

        clock.advance(2)  # 91 s since the last ping: the deadline (90 s) passed
        assert await heartbeats.look() == 1
        stored = await rows(parts)
        assert stored[-1][:2] == ("local", "fail")
        assert stored[-1][2].startswith("no ping since ")
        assert "expected every 1m, grace 30s" in stored[-1][2]
        assert await heartbeats.look() == 0  # the same deadline is stored once
        await parts.controllers.incidents.tick()
        assert parts.controllers.incidents.open_count == 1
        listed = (await client.get("/api/v1/incidents")).json()
        assert [i["canary"] for i in listed["incidents"] if i["state"] == "open"] == ["ops/backup"]

        clock.advance(60)  # another period without a ping: another failed run
        assert await heartbeats.look() == 1
        # The job is back: it reports a failure of its own, then a success.
        answer = await client.post(f"/api/v1/heartbeat/{token}/fail", content=b"disk full")
        assert answer.status_code == 200
        assert (await rows(parts))[-1] == ("local", "fail", "disk full")
        clock.advance(5)
        await client.get(f"/api/v1/heartbeat/{token}")
        await parts.controllers.incidents.tick()
        assert parts.controllers.incidents.open_count == 0
        metrics = (await client.get("/metrics")).text
        assert 'reconciler_heartbeat_pings_total{kind="ping",outcome="stored"} 3' in metrics
        assert "reconciler_heartbeat_missed_total 2" in metrics
        probe = [line for line in metrics.splitlines() if line.startswith("probe_success{")]
        assert any('check="nightly"' in line and 'agent="local"' in line for line in probe)
        # The status site shows the heartbeat and its runs like any check's.
        await parts.controllers.site.build(tmp_path / "site")
        page = (tmp_path / "site" / "canary" / "ops.backup.html").read_text()
        assert "heartbeat check <code>nightly</code>" in page
        assert "a ping expected every 1m, 30s late at most" in page
        assert "no ping since" in page  # among the recent failures


@pytest.mark.anyio
async def test_a_late_ping_still_stores_the_missed_deadline_and_start_times_the_run(
    repo: Path, tmp_path: Path
) -> None:
    clock = Clock()
    async with serving(repo, tmp_path / "state.duckdb", clock) as (parts, client, heartbeats):
        token = await mint(client)
        clock.advance(91)  # past period + grace of the minting; the watchdog has not looked
        assert (await client.get(f"/api/v1/heartbeat/{token}/start")).status_code == 200
        clock.advance(2.5)
        assert (await client.post(f"/api/v1/heartbeat/{token}")).status_code == 200
        assert [status for _, status, _ in await rows(parts)] == ["fail", "pass"]
        assert await heartbeats.look() == 0  # that deadline is stored once

        def durations(connection: Any) -> list[Any]:
            query = "SELECT duration_ms FROM results WHERE status = 'pass'"
            return [row[0] for row in connection.execute(query).fetchall()]

        [duration] = await parts.control.state.read(durations)
        assert 2500 <= duration < 3500  # the 2.5 s the test moved the clock, plus real time


@pytest.mark.anyio
async def test_a_paused_heartbeat_expects_nothing_and_counts_again_from_its_resumption(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("canaries/backup.yaml", CANARY)
    config_repo.commit("a heartbeat")
    clock = Clock()
    async with serving(config_repo.path, tmp_path / "s.duckdb", clock) as (parts, client, beats):
        token = await mint(client)
        paused = CANARY.replace("spec:\n", "spec:\n  replicas: 0\n")
        config_repo.write("canaries/backup.yaml", paused)
        config_repo.commit("pause")
        assert not (await parts.control.reconcile("test")).errors
        clock.advance(3600)
        assert await beats.look() == 0  # an hour without a ping, and nothing is due
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 404
        config_repo.write("canaries/backup.yaml", CANARY)
        config_repo.commit("resume")
        assert not (await parts.control.reconcile("test")).errors
        clock.advance(89)
        assert await beats.look() == 0  # counted from the resumption, not the minting
        clock.advance(2)
        assert await beats.look() == 1


@pytest.mark.anyio
async def test_concurrent_pings_of_many_heartbeats_are_all_stored(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    beats = "".join(f"    - name: job-{n}\n      period: 1m\n" for n in range(8))
    config_repo.write(
        "canaries/jobs.yaml", CANARY.split("  heartbeat:")[0] + "  heartbeat:\n" + beats
    )
    config_repo.commit("eight jobs")
    state = tmp_path / "s.duckdb"
    async with serving(config_repo.path, state, Clock()) as (_, client, _):
        tokens = []
        for n in range(8):
            body = {"canary": "ops/backup", "check": f"job-{n}"}
            answer = await client.post("/operator/heartbeats/token", json=body, headers=ADMIN)
            tokens.append(answer.json()["token"])
        answers = await asyncio.gather(*(client.get(f"/api/v1/heartbeat/{t}") for t in tokens))
        assert [a.json()["outcome"] for a in answers] == ["stored"] * 8
    async with serving(config_repo.path, state, Clock()) as (_, client, _):
        listed = (await client.get("/operator/heartbeats", headers=ADMIN)).json()["heartbeats"]
        assert len(listed) == 8 and all(h["last_ping"] for h in listed)


@pytest.mark.anyio
async def test_a_bad_token_is_404_without_saying_what_was_wrong(repo: Path, tmp_path: Path) -> None:
    async with serving(repo, tmp_path / "state.duckdb", Clock()) as (parts, client, _):
        old = await mint(client)
        token = await mint(client)  # rotated: the first one stops working
        wrong = [
            old,
            token[:-1] + ("A" if token[-1] != "A" else "B"),
            token.replace("crh_", "cra_"),
            "crh_",
            "x" * 300,
        ]
        answers = [await client.get(f"/api/v1/heartbeat/{bad}") for bad in wrong]
        answers.append(await client.post(f"/api/v1/heartbeat/{old}/fail"))
        assert {a.status_code for a in answers} == {404}
        assert {a.content for a in answers} == {b'{"error":"no heartbeat has this token"}'}
        assert await rows(parts) == []
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 200
        paths = (await client.get("/openapi.json")).json()["paths"]
        for path in ("/api/v1/heartbeat/{token}", "/api/v1/heartbeat/{token}/fail"):
            assert set(paths[path]) == {"get", "post"}
            assert "404" in paths[path]["post"]["responses"]
        too_big = await client.post(f"/api/v1/heartbeat/{token}/fail", content=b"x" * 20_000)
        assert too_big.status_code == 413
        # Minting needs the admin token, and a heartbeat the served revision has.
        unauthorised = await client.post("/operator/heartbeats/token", json=KEY)
        assert unauthorised.status_code == 401
        missing = await client.post(
            "/operator/heartbeats/token", json={**KEY, "check": "weekly"}, headers=ADMIN
        )
        assert missing.status_code == 404
        assert "has no heartbeat check 'weekly'" in missing.json()["error"]


@pytest.mark.anyio
async def test_a_run_started_before_a_restart_is_timed_by_its_end_after_it(
    repo: Path, tmp_path: Path
) -> None:
    state, clock = tmp_path / "state.duckdb", Clock()
    async with serving(repo, state, clock) as (_, client, _):
        token = await mint(client)
        assert (await client.get(f"/api/v1/heartbeat/{token}/start")).status_code == 200
    clock.advance(20)  # the server restarts while the job runs
    async with serving(repo, state, clock) as (parts, client, _):
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 200

        def durations(connection: Any) -> list[Any]:
            query = "SELECT duration_ms FROM results WHERE status = 'pass'"
            return [row[0] for row in connection.execute(query).fetchall()]

        [duration] = await parts.control.state.read(durations)
        assert 20_000 <= duration < 21_000  # from the /start before the restart
        # The end clears it: the next run without a /start has no duration.
        clock.advance(30)
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 200
        assert sorted(await parts.control.state.read(durations)) == [0.0, duration]


def test_a_state_file_from_before_start_times_were_kept_is_read_and_extended(
    tmp_path: Path,
) -> None:
    connection = duckdb.connect(str(tmp_path / "old.duckdb"))
    connection.execute(
        """CREATE TABLE heartbeats (canary VARCHAR NOT NULL, check_name VARCHAR NOT NULL,
           token_hash VARCHAR NOT NULL, minted_at TIMESTAMPTZ NOT NULL,
           last_ping_at TIMESTAMPTZ, PRIMARY KEY (canary, check_name))"""
    )
    connection.execute("INSERT INTO heartbeats VALUES ('ops/backup', 'nightly', 'h', now(), NULL)")
    ensure_table(connection)
    record_start(connection, ("ops/backup", "nightly"), datetime(2026, 12, 5, 1, 0, tzinfo=UTC))
    [stored] = load_heartbeats(connection).values()
    assert (stored.token_hash, stored.started_at) == ("h", datetime(2026, 12, 5, 1, 0, tzinfo=UTC))


@pytest.mark.anyio
async def test_the_token_and_the_last_ping_survive_a_restart(repo: Path, tmp_path: Path) -> None:
    state, clock = tmp_path / "state.duckdb", Clock()
    async with serving(repo, state, clock) as (parts, client, heartbeats):
        token = await mint(client)
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 200
        listed = (await client.get("/operator/heartbeats", headers=ADMIN)).json()["heartbeats"]
        assert [(h["canary"], h["check"], h["has_token"]) for h in listed] == [
            ("ops/backup", "nightly", True)
        ]
        last_ping = listed[0]["last_ping"]

    clock.advance(100)  # down for longer than period + grace
    async with serving(repo, state, clock) as (parts, client, heartbeats):
        listed = (await client.get("/operator/heartbeats", headers=ADMIN)).json()["heartbeats"]
        assert listed[0]["last_ping"] == last_ping
        assert await heartbeats.look() == 1  # the deadline missed while the server was down
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 200
        assert [status for _, status, _ in await rows(parts)] == ["pass", "fail", "pass"]

    # Minted without a server: the CLI writes the state file, the old token stops working.
    minted = run_cli("heartbeats", "token", "ops/backup", "nightly", "--state", state)
    assert minted.code == 0, minted.err
    new = minted.out.strip()
    assert new.startswith("crh_") and new != token
    unknown = run_cli("heartbeats", "token", "ops/backup", "weekly", "--state", state)
    assert unknown.code == 1 and "has no heartbeat check 'weekly'" in unknown.err
    async with serving(repo, state, clock) as (parts, client, _):
        assert (await client.get(f"/api/v1/heartbeat/{token}")).status_code == 404
        assert (await client.get(f"/api/v1/heartbeat/{new}")).status_code == 200


@pytest.mark.slow
def test_a_cron_job_pings_a_running_server_with_a_token_minted_through_it(
    repo: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    command = [sys.executable, "-m", "reconciler", "heartbeats", "token", "ops/backup", "nightly"]
    with running_server(repo, state) as server:
        server.wait_ready()
        minted = subprocess.run(
            [*command, "--state", str(state)],
            cwd=ROOT, capture_output=True, text=True, check=False,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert f"The job pings {server.url}/api/v1/heartbeat/{token}" in minted.stderr
        # What the job runs: curl, here httpx, against the real listener.
        answer = httpx.post(f"{server.url}/api/v1/heartbeat/{token}", content=b"done")
        assert answer.status_code == 200 and answer.json()["outcome"] == "stored"
        assert httpx.get(f"{server.url}/api/v1/heartbeat/{token}x").status_code == 404
