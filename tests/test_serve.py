"""`reconcile serve` follows its source (in process), and the CLI works beside a running server
(real processes, slow)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reconciler.server.settings import ServeSettings, SettingsError, load_settings
from reconciler.sources.gitrepo import GitSourceError, mirror
from tests import httpd
from tests.conftest import ROOT, ConfigRepo, canary_doc, run_cli
from tests.inprocess import running_in_process
from tests.server import ADMIN_TOKEN, running_server, wait_for


def _urls(server_client: httpx.Client, token: str) -> list[str]:
    body = server_client.get("/api/agent/targets", headers={"Authorization": f"Bearer {token}"})
    return [c["checks"][0]["url"] for c in body.json()["canaries"]]


def test_a_commit_to_the_watched_working_tree_is_applied(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        token = server.token("eu-1")
        repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/watched"))
        sha = repo.commit("edit web")
        wait_for(
            lambda: (
                server.status()["current_revision"]["sha"] == sha
                and not server.status()["current_revision"]["dirty"]
            ),
            10,
            "the commit to be applied without a webhook",
        )
        assert _urls(server.client, token) == ["https://example.com/watched"]


def test_a_bare_repository_is_mirrored_and_fetched(repo: ConfigRepo, tmp_path: Path) -> None:
    bare = tmp_path / "config.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    # Only the webhook may trigger a fetch here.
    with running_in_process(bare, tmp_path / "state.duckdb", poll_interval=3600) as server:
        server.wait_ready()
        assert server.status()["source"] == f"git repository {bare}"
        token = server.token("eu-1")
        repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/pushed"))
        sha = repo.commit("edit web")
        repo.git("push", "-q", str(bare), "main")
        assert server.webhook().status_code == 202
        wait_for(lambda: server.status()["current_revision"]["sha"] == sha, 5, "fetch + apply")
        assert _urls(server.client, token) == ["https://example.com/pushed"]


def test_a_remote_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    # It takes the connection and says nothing: the clone (and the server's start) waited
    # for good. It is stopped after the time allowed, and leaves no half mirror behind.
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/config.git"
    directory = tmp_path / "mirror"
    try:
        started = time.monotonic()
        with pytest.raises(GitSourceError) as refused:
            mirror(url, directory, seconds=1)
        assert time.monotonic() - started < 30
    finally:
        listener.close()
    assert (
        str(refused.value)
        == f"cloning {url} did not finish within 1 s (the remote does not answer)"
    )
    assert not directory.exists()


def test_a_port_another_process_holds_stops_serve_before_it_touches_the_state(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    # uvicorn logged the bind error and exited 3, after the state file was opened and the
    # config applied.
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    state = tmp_path / "state.duckdb"
    try:
        result = run_cli("serve", "--repo", repo.path, "--state", state, "--port", str(port))
    finally:
        taken.close()
    assert result.code == 1
    assert result.err.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; pass --port "
        "with another port (0 picks a free one)"
    )
    assert not state.exists()


def test_sighup_reads_the_repository_now(repo: ConfigRepo, tmp_path: Path) -> None:
    # SIGHUP is how daemons are asked to read their configuration again; it killed the
    # server (Python's default), leaving its address file and nginx behind.
    bare = tmp_path / "config.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    with running_server(
        bare, tmp_path / "state.duckdb", extra=("--poll-interval", "3600")
    ) as server:
        server.wait_ready()
        repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/hup"))
        sha = repo.commit("edit web")
        repo.git("push", "-q", str(bare), "main")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: server.status()["current_revision"]["sha"] == sha, 10, "fetch + apply")
        assert server.process.poll() is None
        assert server.status()["last_attempt"]["trigger"] == "SIGHUP"
    assert server.process.returncode == 0


class _AsksForAPassword(http.server.BaseHTTPRequestHandler):
    """A git host that wants credentials for everything."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="config"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_git_never_asks_for_a_password(tmp_path: Path) -> None:
    # From a terminal, git asked "Username for ..." there and the server's start waited on
    # it; with no terminal it failed for want of one. It now says prompts are off.
    with httpd.serving(_AsksForAPassword) as host:
        url = httpd.url(host, "/config.git")
        with pytest.raises(GitSourceError) as refused:
            mirror(url, tmp_path / "mirror", seconds=30)
    assert "terminal prompts disabled" in str(refused.value)


def test_git_over_ssh_asks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ssh would ask to trust a new host key, or for a key's passphrase, on the terminal.
    # A stand-in `ssh` first on PATH records how git runs it (no ssh server runs here).
    bin_dir, said = tmp_path / "bin", tmp_path / "ssh-arguments"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$@" > {said}\nexit 255\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    monkeypatch.delenv("GIT_SSH", raising=False)
    with pytest.raises(GitSourceError):
        mirror("ssh://git@config.example/config.git", tmp_path / "mirror", seconds=30)
    assert said.read_text().startswith("-o BatchMode=yes ")


def test_agents_token_without_a_server(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    assert run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve").code == 0
    minted = run_cli("agents", "token", "eu-1", "--state", state)
    assert minted.code == 0
    assert minted.out.startswith("cra_eu-1.")
    unknown = run_cli("agents", "token", "nobody", "--state", state)
    assert unknown.code == 1
    assert "agent nobody is not in" in unknown.err
    with running_in_process(repo.path, state) as server:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {minted.out.strip()}"}
        assert server.client.get("/api/agent/targets", headers=headers).status_code == 200


@pytest.mark.slow
def test_agents_token_while_a_server_holds_the_state(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    command = [sys.executable, "-m", "reconciler", "agents", "token", "eu-1", "--state", str(state)]
    with running_server(repo.path, state) as server:
        server.wait_ready()
        without = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "RECONCILER_ADMIN_TOKEN"},
            check=False,
        )
        assert without.returncode == 1
        assert "held by a running `reconcile serve`" in without.stderr
        assert "RECONCILER_ADMIN_TOKEN" in without.stderr
        with_token = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
            check=False,
        )
        assert with_token.returncode == 0, with_token.stderr
        token = with_token.stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        assert server.client.get("/api/agent/targets", headers=headers).status_code == 200


def test_operator_api_is_404_without_an_admin_token(repo: ConfigRepo, tmp_path: Path) -> None:
    env = {"RECONCILER_ADMIN_TOKEN": ""}
    with running_in_process(repo.path, tmp_path / "state.duckdb", env=env) as server:
        server.wait_ready()
        for method, path in [
            ("GET", "/operator/agents"),
            ("GET", "/operator/regions"),
            ("POST", "/operator/agents/eu-1/token"),
        ]:
            response = server.client.request(
                method, path, headers={"Authorization": "Bearer anything"}
            )
            assert response.status_code == 404, path


def test_operator_lists_agents_with_live_status(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        assert server.client.get("/operator/agents").status_code == 401
        token = server.token("eu-1")
        served = server.client.get(
            "/api/agent/targets", headers={"Authorization": f"Bearer {token}"}
        ).headers["etag"]
        [agent] = server.admin("GET", "/operator/agents").json()["agents"]
        assert agent["name"] == "eu-1"
        assert agent["last_pull"] is not None
        assert agent["config_version_served"] == served.strip('"')
        assert agent["results_last_hour"] == 0
        [region] = server.admin("GET", "/operator/regions").json()["regions"]
        assert region["agents"] == ["eu-1"]


def test_operations_endpoints(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        assert server.client.get("/healthz").status_code == 200
        server.wait_ready()
        metrics = server.client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'reconciler_reconciles_total{result="applied"} 1' in metrics.text
        assert "reconciler_revision_info{sha=" in metrics.text
        assert "reconciler_http_request_duration_seconds_bucket" in metrics.text
        spec = server.client.get("/openapi.json").json()
        assert "/api/agent/targets" in spec["paths"]
        assert "/hooks/git" in spec["paths"]


@pytest.mark.slow
def test_a_locked_state_file_is_a_clear_error(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    with running_server(repo.path, state) as server:
        server.wait_ready()
        # The first server holds the file for good: waiting out the default 10 s proves
        # nothing, so the second one gives up after a moment (set from the environment).
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "reconciler", "serve", "--repo", str(repo.path),
             "--state", str(state), "--port", "0"],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
            env={**os.environ, "RECONCILER_LOCK_TIMEOUT": "0.2"},
        )  # fmt: skip
        waited = time.monotonic() - started
    assert second.returncode == 1
    assert f"state file {state} is in use by process" in second.stderr
    assert waited < 8, f"the lock timeout setting was not used: it waited {waited:.1f}s"


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[serve]\nport = 9000\nhost = "0.0.0.0"\npoll_interval = 5\n')
    settings = load_settings(
        {"port": 9100, "host": None},
        {"RECONCILER_HOST": "127.0.0.2", "RECONCILER_ADMIN_TOKEN": "secret"},
        config,
    )
    assert (settings.port, settings.host, settings.poll_interval) == (9100, "127.0.0.2", 5.0)
    assert settings.admin_token == "secret"
    assert "secret" not in repr(settings)
    assert load_settings({}, {}).port == ServeSettings().port


def test_settings_file_refuses_secrets_and_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('admin_token = "x"\n')
    with pytest.raises(SettingsError, match="secrets come from the environment only"):
        load_settings({}, {}, config)
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings({}, {}, config)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        # Port 70000 was taken modulo 65536: the server said :70000 and listened on :4464.
        ("RECONCILER_PORT", "70000", "RECONCILER_PORT: 70000 is not a TCP port (0-65535; 0: any)"),
        ("RECONCILER_GATEWAY_LISTEN", "localhost", "GATEWAY_LISTEN: 'localhost' needs a TCP port"),
        ("RECONCILER_GATEWAY_LISTEN", "127.0.0.1:99999", "needs a TCP port (0-65535)"),
        ("RECONCILER_SITE_INTERVAL", "-1", "SITE_INTERVAL: -1.0 must be greater than 0"),
        ("RECONCILER_POLL_INTERVAL", "0", "POLL_INTERVAL: 0.0 must be greater than 0"),
        ("RECONCILER_CANARY_INTERVAL", "0", "CANARY_INTERVAL: 0.0 must be greater than 0"),
        ("RECONCILER_AGENT_SILENT_AFTER", "-3", "SILENT_AFTER: -3.0 must be 0 or more"),
        ("RECONCILER_LOCK_TIMEOUT", "-1", "LOCK_TIMEOUT: -1.0 must be 0 or more"),
    ],
)
def test_settings_out_of_range_are_refused_at_start(variable: str, value: str, said: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({}, {variable: value})
    assert said in str(refused.value)


def test_a_bad_setting_names_where_it_was_read(tmp_path: Path) -> None:
    # "site_interval: 'abc' is not a valid float" did not say it came from the file.
    config = tmp_path / "serve.toml"
    config.write_text("site_interval = 'abc'\nport = 8080\n")
    with pytest.raises(SettingsError) as refused:
        load_settings({}, {}, config)
    assert str(refused.value) == f"{config}: site_interval: 'abc' is not a number"
    config.write_text("site_interval = -3\n")
    with pytest.raises(SettingsError) as refused:
        load_settings({}, {}, config)
    assert str(refused.value) == f"{config}: site_interval: -3.0 must be greater than 0"
    # A variable overriding the file's value is the one named.
    with pytest.raises(SettingsError) as refused:
        load_settings({}, {"RECONCILER_SITE_INTERVAL": "0"}, config)
    assert str(refused.value) == "RECONCILER_SITE_INTERVAL: 0.0 must be greater than 0"


def test_settings_at_their_edges_are_taken() -> None:
    edges = {"port": 0, "agent_silent_after": 0, "lock_timeout": 0, "gateway_listen": "[::1]:0"}
    settings = load_settings(edges, {})
    assert (settings.port, settings.agent_silent_after, settings.gateway_listen) == (
        0,
        0,
        "[::1]:0",
    )


def test_agents_token_never_creates_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "typo.duckdb"
    result = run_cli("agents", "token", "eu-1", "--state", state)
    assert result.code == 1
    assert "no state file at" in result.err
    assert not state.exists()


@pytest.mark.slow
def test_agents_token_through_an_explicit_server(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "agents", "token", "eu-1",
             "--state", str(tmp_path / "elsewhere.duckdb"), "--server", server.url],
            cwd=ROOT, capture_output=True, text=True, check=False,
            env={**os.environ, "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
        assert server.client.get("/api/agent/targets", headers=headers).status_code == 200
        unauthorized = server.client.get("/api/agent/targets")
        assert unauthorized.headers["www-authenticate"] == "Bearer"
