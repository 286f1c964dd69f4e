"""The server keeps the status site up to date, and builds it for the CLI while it holds the
state file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc
from tests.server import ADMIN_TOKEN, running_server, wait_for


def test_serve_builds_the_site_and_builds_it_for_the_cli(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("initial")
    state = tmp_path / "state.duckdb"
    own_site = tmp_path / "state.duckdb.site"
    with running_server(config_repo.path, state, extra=("--site-interval", "0.5")) as server:
        server.wait_ready()
        wait_for(lambda: (own_site / "index.html").exists(), 30, "the server's own site")
        assert "default/web" in (own_site / "index.html").read_text()

        elsewhere = tmp_path / "published"
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "site", "build", "--state", str(state),
             "--out", str(elsewhere)],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "through the server" in result.stdout
        assert (elsewhere / "index.html").exists()
