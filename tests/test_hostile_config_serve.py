"""The server's reconcile loop on hostile config: the same clear errors as `validate`, the
last good revision keeps serving, and the loop goes on to apply the next good commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ConfigRepo
from tests.inprocess import serving, until_ready
from tests.server import ADMIN_TOKEN
from tests.test_hostile_config import BASE, alias_bomb, http

HOSTILE = {
    "timeout.yaml": http("timeout: 9999999999999999999999h"),
    "integer.yaml": http("thresholdMillis: 99999999999999999999999"),
    "bomb.yaml": alias_bomb(10, 10),
    "api.yaml": "apiVersion: [a]\nkind: Region\n",
}


@pytest.mark.anyio
async def test_hostile_commits_are_refused_and_the_loop_goes_on(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("base.yaml", BASE)
    repo.commit("base")
    outside = tmp_path / "outside.yaml"
    outside.write_text("apiVersion: s3cr3t\n")
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, _client):
        await until_ready(parts)
        control = parts.control
        served = [r.name for r in control.resources_of("Region")]

        for name, text in HOSTILE.items():
            repo.write(name, text)
        os.symlink(outside, repo.path / "outside.yaml")
        repo.commit("hostile")
        attempt = await control.reconcile("test: hostile commit")
        assert not attempt.applied
        shown = "\n".join(attempt.errors)
        for name in [*HOSTILE, "outside.yaml"]:
            assert f"{name}:" in shown, f"no error names {name}:\n{shown}"
        assert "64-bit" in shown and "expanded nodes per file" in shown
        assert "s3cr3t" not in shown and "Traceback" not in shown
        assert [r.name for r in control.resources_of("Region")] == served

        for name in [*HOSTILE, "outside.yaml"]:
            repo.remove(name)
        repo.write(
            "more.yaml", "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata: {name: ap}\n"
        )
        repo.commit("fixed")
        attempt = await control.reconcile("test: fixed commit")
        assert attempt.applied, attempt.errors
        assert "ap" in [r.name for r in control.resources_of("Region")]


@pytest.mark.anyio
async def test_an_operator_edit_of_a_tree_with_a_fifo_is_refused(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("base.yaml", BASE)
    repo.commit("base")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        os.mkfifo(repo.path / "pipe.yaml")
        commits = repo.git("rev-list", "--count", "HEAD")
        response = await client.post("/operator/regions", json={"name": "ap"}, headers=admin)
        assert response.status_code == 409, response.text
        assert "pipe.yaml: is a FIFO" in response.json()["error"]
        assert repo.git("rev-list", "--count", "HEAD") == commits


@pytest.mark.anyio
@pytest.mark.parametrize("move", ["hidden", "removed"])
async def test_a_commit_leaving_no_config_is_refused_and_nothing_is_destroyed(
    tmp_path: Path, move: str
) -> None:
    """`plan` refuses an empty configuration (it would delete everything): so does the
    server, whether the files went under a hidden path or away."""
    repo = ConfigRepo(tmp_path / "config")
    repo.write("base.yaml", BASE)
    repo.commit("base")
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, _client):
        await until_ready(parts)
        control = parts.control
        served = [r.name for r in control.resources_of("Region")]
        assert served
        if move == "hidden":
            repo.git("mv", "base.yaml", ".attic.yaml")
        else:
            repo.git("rm", "-q", "base.yaml")
        repo.commit(f"config {move}")
        attempt = await control.reconcile("test: no config left")
        assert not attempt.applied
        assert "refusing to load an empty configuration" in "\n".join(attempt.errors)
        assert [r.name for r in control.resources_of("Region")] == served
