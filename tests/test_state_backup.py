"""`reconcile state backup` and `POST /api/state/backup`: a copy of the state file, made while
it is in use, that every command opens as a state file of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.conftest import ROOT, SAMPLE_REPO, ConfigRepo, run_cli
from tests.inprocess import running_in_process
from tests.server import ADMIN_TOKEN, running_server
from tests.waiting import wait_for


def tables(path: Path) -> dict[str, int]:
    """Each table of a DuckDB file and its rows."""
    with duckdb.connect(str(path), read_only=True) as connection:
        names = [row[0] for row in connection.execute("SHOW TABLES").fetchall()]
        return {
            name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            for name in names
        }


def test_a_backup_is_a_state_file_with_every_table_and_row(tmp_path: Path) -> None:
    state, copy = tmp_path / "state.duckdb", tmp_path / "backups" / "monday.duckdb"
    assert run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve").code == 0
    copy.parent.mkdir()
    made = run_cli("state", "backup", "--state", state, "--out", copy)
    assert made.code == 0, made.err
    assert f"Backed up {state} to {copy}: serial 1, lineage " in made.out
    assert tables(copy) == tables(state)
    planned = run_cli("plan", "--repo", SAMPLE_REPO, "--state", copy)
    assert planned.code == 0 and "No changes." in planned.out
    assert sorted(p.name for p in copy.parent.iterdir()) == ["monday.duckdb"]  # nothing else


def test_a_backup_never_replaces_a_file_and_leaves_nothing_when_it_cannot_be_written(
    tmp_path: Path,
) -> None:
    state, taken = tmp_path / "state.duckdb", tmp_path / "taken.duckdb"
    assert run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve").code == 0
    taken.write_bytes(b"someone's file")
    refused = run_cli("state", "backup", "--state", state, "--out", taken)
    assert refused.code == 1
    assert f"{taken} exists; a backup never replaces a file" in refused.err
    assert taken.read_bytes() == b"someone's file"
    nowhere = run_cli("state", "backup", "--state", state, "--out", tmp_path / "no" / "x.duckdb")
    assert nowhere.code == 1 and "is not a directory" in nowhere.err
    missing = run_cli("state", "backup", "--state", tmp_path / "none.duckdb", "--out", taken)
    assert missing.code == 1 and "run `reconcile apply` first" in missing.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.duckdb", "taken.duckdb"]


def test_the_server_backs_up_the_file_it_holds_with_the_results_it_took(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state, copy = tmp_path / "state.duckdb", tmp_path / "copy.duckdb"
    with running_in_process(repo.path, state) as server:
        server.wait_ready()
        started = datetime.now(UTC) - timedelta(seconds=5)
        row = {"canary": "default/web@eu-1", "check": "check", "started_at": started.isoformat(),
               "duration_ms": 12.0, "status": "pass"}  # fmt: skip
        shipped = server.client.post(
            "/api/agent/results",
            headers={"Authorization": f"Bearer {server.token('eu-1')}"},
            content=json.dumps({"results": [row]}),
        )
        assert shipped.status_code == 200 and shipped.json()["accepted"] == 1, shipped.text
        body = {"out": str(copy)}
        assert server.client.post("/api/state/backup", json=body).status_code == 401
        relative = server.admin("POST", "/api/state/backup", json={"out": "copy.duckdb"})
        assert relative.status_code == 422 and "absolute" in relative.json()["error"]
        made = server.admin("POST", "/api/state/backup", json=body)
        assert made.status_code == 200, made.text
        assert made.json()["out"] == str(copy) and made.json()["serial"] == 1
        again = server.admin("POST", "/api/state/backup", json=body)
        assert again.status_code == 409 and "exists" in again.json()["error"]
    copied, now = tables(copy), tables(state)
    assert copied["results"] == 1 and copied["resources"] == now["resources"] > 0
    assert copied.keys() == now.keys()  # the server wrote on after it (agents' activity)


def test_results_are_taken_while_a_backup_is_being_copied(repo: ConfigRepo, tmp_path: Path) -> None:
    state, copy = tmp_path / "state.duckdb", tmp_path / "copy.duckdb"
    partial = tmp_path / ".copy.duckdb.partial"  # there while the copy is made
    older = 1_000_000  # enough rows that the copy takes a while (0.5 s here)
    with running_in_process(repo.path, state) as server, ThreadPoolExecutor(1) as pool:
        server.wait_ready()
        control = server.parts.control
        server.call(
            lambda: control.state.write(
                lambda c: c.execute(
                    f"""INSERT INTO results (agent, region, canary, parent, check_name,
                            check_type, started_at, duration_ms, status, received_at)
                        SELECT 'eu-1', 'eu', 'default/web@eu-1', 'default/web', 'check',
                               'http', TIMESTAMPTZ '2026-11-01' + to_microseconds(i * 1000),
                               i % 997, 'pass', TIMESTAMPTZ '2026-11-01'
                        FROM range({older}) t(i)"""
                )
            )
        )
        backing_up = server.new_client()
        made = pool.submit(
            lambda: backing_up.post(
                "/api/state/backup",
                json={"out": str(copy)},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        )
        wait_for(partial.exists, 10, "the copy to begin")
        row = {"canary": "default/web@eu-1", "check": "check", "status": "pass",
               "started_at": datetime.now(UTC).isoformat(), "duration_ms": 3.0}  # fmt: skip
        shipped = server.client.post(
            "/api/agent/results",
            headers={"Authorization": f"Bearer {server.token('eu-1')}"},
            content=json.dumps({"results": [row]}),
        )
        assert shipped.status_code == 200 and shipped.json()["accepted"] == 1, shipped.text
        assert not made.done() and partial.exists()  # stored before the copy was done
        assert made.result(60).status_code == 200, made.result().text
        backing_up.close()
    assert not partial.exists()
    assert tables(state)["results"] == older + 1
    assert tables(copy)["results"] in (older, older + 1)  # as of one moment: all or none


@pytest.mark.slow
def test_state_backup_goes_through_a_running_server(repo: ConfigRepo, tmp_path: Path) -> None:
    state, copy = tmp_path / "state.duckdb", tmp_path / "copy.duckdb"
    command = [sys.executable, "-m", "reconciler", "state", "backup", "--state", str(state),
               "--out", str(copy)]  # fmt: skip
    with running_server(repo.path, state) as server:
        server.wait_ready()
        unauthorised = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "RECONCILER_ADMIN_TOKEN"},
        )  # fmt: skip
        assert unauthorised.returncode == 1
        assert "set RECONCILER_ADMIN_TOKEN" in unauthorised.stderr
        made = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "through the server at http://" in made.stdout
    copied, now = tables(copy), tables(state)
    assert copied.keys() == now.keys() and copied["resources"] == now["resources"] > 0
