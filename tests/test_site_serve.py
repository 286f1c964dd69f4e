"""The server keeps the status site up to date, and builds it for the CLI while it holds the
state file (in process; the CLI against a real server is the slow end-to-end test)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import ADMIN_TOKEN, running_server, wait_for


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("initial")
    return config_repo


def test_serve_keeps_its_site_and_builds_one_on_request(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    own_site = tmp_path / "state.duckdb.site"
    with running_in_process(repo.path, state, site_interval=0.5) as server:
        server.wait_ready()
        wait_for(lambda: (own_site / "index.html").exists(), 30, "the server's own site")
        assert "default/web" in (own_site / "index.html").read_text()

        elsewhere = tmp_path / "published"
        assert (
            server.client.post("/api/site/build", json={"out": str(elsewhere)}).status_code == 401
        )
        built = server.admin("POST", "/api/site/build", json={"out": str(elsewhere)})
        assert built.status_code == 200, built.text
        assert built.json()["out"] == str(elsewhere)
        assert "default/web" in (elsewhere / "index.html").read_text()
        relative = server.admin("POST", "/api/site/build", json={"out": "published"})
        assert relative.status_code == 422
        assert "absolute" in relative.json()["error"]


def test_metrics_say_when_the_site_was_last_built_how_long_it_took_and_what_it_drew(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    started = time.time()
    with running_in_process(repo.path, tmp_path / "state.duckdb", site_interval=0.5) as server:
        server.wait_ready()
        assert gauges(server)["reconciler_site_interval_seconds"] == 0.5
        wait_for(lambda: "reconciler_site_last_build_timestamp_seconds" in gauges(server), 30,
                 "the first build's series")  # fmt: skip
        first = gauges(server)
        built = first["reconciler_site_last_build_timestamp_seconds"]
        assert started <= built <= time.time()
        assert 0 < first["reconciler_site_last_build_seconds"] < 60
        assert first["reconciler_site_last_build_pages"] > 0
        # A build into another directory is the caller's: the server's own site's stay.
        elsewhere = server.admin("POST", "/api/site/build", json={"out": str(tmp_path / "other")})
        assert elsewhere.status_code == 200, elsewhere.text
        wait_for(lambda: gauges(server)["reconciler_site_last_build_timestamp_seconds"] > built,
                 30, "a later build of its own site")  # fmt: skip


def gauges(server: InProcessServer) -> dict[str, float]:
    """The unlabelled samples of /metrics, by name."""
    text = server.client.get("/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.mark.slow
def test_site_build_goes_through_a_running_server(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    with running_server(repo.path, state) as server:
        server.wait_ready()
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


@pytest.mark.slow
def test_a_refused_commit_shows_as_a_banner_on_every_page_until_one_is_applied(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    good = config_repo.commit("initial")
    state = tmp_path / "state.duckdb"
    site = tmp_path / "state.duckdb.site"
    pages = ("index.html", "status.html", "incidents.html", "canary/default.web-7d.html")
    with running_server(config_repo.path, state, extra=("--site-interval", "0.5")) as server:
        server.wait_ready()
        wait_for(lambda: (site / "index.html").exists(), 30, "the server's own site")
        assert "was refused" not in (site / "index.html").read_text()

        config_repo.write("canaries/web.yaml", canary_doc("web").replace("spec:", "spek:"))
        bad = config_repo.commit("a typo")
        assert server.webhook().status_code == 202
        wait_for(lambda: bool(server.status()["last_attempt"]["errors"]), 30, "the refusal")
        first = server.status()["last_attempt"]["errors"][0]
        assert first.startswith("canaries/web.yaml:")

        def banner_everywhere() -> bool:
            return all(bad[:12] in (site / page).read_text() for page in pages)

        wait_for(banner_everywhere, 30, "the banner on every page")
        for page in pages:
            html = (site / page).read_text()
            banner = html[html.index('<aside class="banner refused"') : html.index("</aside>")]
            assert f"Commit <code>{bad[:12]}</code> was refused" in banner, page
            assert f"<code>{first.split(':')[0]}:{first.split(':')[1]}:" in banner, page
            assert f"Still serving <code>{good[:12]}</code>" in banner, page
        assert "default/web" in (site / "index.html").read_text()  # still the good revision

        config_repo.write("canaries/web.yaml", canary_doc("web"))
        config_repo.commit("fix the typo")
        assert server.webhook().status_code == 202
        wait_for(
            lambda: not any("was refused" in (site / page).read_text() for page in pages),
            30,
            "the banner to go",
        )

        # The server's builder is kept from build to build: a canary applied later gets
        # its pages (what it keeps of the served resources goes with the state's serial).
        config_repo.write("canaries/shop.yaml", canary_doc("shop"))
        config_repo.commit("a second canary")
        assert server.webhook().status_code == 202
        wait_for(lambda: (site / "canary/default.shop.html").exists(), 30, "the new canary's page")
        assert "default/shop" in (site / "index.html").read_text()


@pytest.mark.slow
def test_a_server_drawing_its_site_in_render_processes_keeps_running(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    """With enough pages for forked render processes (90 paused canaries: 450 canary pages),
    the server rebuilds its site again and again and still stops only when told: the render
    processes neither hand the pool's SIGTERM to the server's loop nor keep the pool waiting."""
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + agent_doc("eu-1", "eu"))
    for n in range(90):
        doc = canary_doc(f"c{n:02d}").replace("'@every 30s'", "'@never'")
        config_repo.write(f"canaries/c{n:02d}.yaml", doc)
    config_repo.commit("a fleet of paused canaries")
    state = tmp_path / "state.duckdb"
    current = tmp_path / "state.duckdb.site"
    with running_server(config_repo.path, state, extra=("--site-interval", "0.2")) as server:
        server.wait_ready()
        wait_for(lambda: (current / "index.html").exists(), 60, "the server's first site")
        # The first build draws every page in render processes; the later ones (the build
        # stamp moves each second, so each is a new version) show the server outlived them.
        versions = {current.resolve()}

        def moved_on() -> bool:
            versions.add(current.resolve())
            return len(versions) >= 4

        wait_for(moved_on, 60, "three more rebuilds")
        assert server.process.poll() is None, server.log.read_text()[-2000:]
        assert server.client.get("/readyz").status_code == 200
        assert "default/c89" in (current / "index.html").read_text()
    assert server.process.returncode == 0, server.log.read_text()[-2000:]
