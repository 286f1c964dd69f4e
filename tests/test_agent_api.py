"""The agent API of the server (in process; SIGTERM on a real process): config pull with
ETags, auth, ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import running_server, wait_for

SECRET_CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: secret
spec:
  schedule: '@every 1m'
  agentSelector: ['eu-1']
  http:
    - name: api
      url: https://example.com/${env:TEST_API_PATH}
      headers:
        - name: Authorization
          valueFrom: {env: TEST_API_TOKEN}
"""


ENV = {"TEST_API_TOKEN": "s3cret-value", "TEST_API_PATH": "health"}


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web", selector="['*']"))
    config_repo.write("canaries/secret.yaml", SECRET_CANARY)
    config_repo.commit("initial")
    return config_repo


@pytest.fixture
def server(repo: ConfigRepo, tmp_path: Path) -> Iterator[InProcessServer]:
    with running_in_process(repo.path, tmp_path / "state.duckdb", ENV) as process:
        process.wait_ready()
        yield process


def pull(server: InProcessServer, token: str, etag: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    return server.client.get("/api/agent/targets", headers=headers)


def test_agent_gets_its_own_canaries_with_secrets_resolved(server: InProcessServer) -> None:
    response = pull(server, server.token("eu-1"))
    assert response.status_code == 200
    body = response.json()
    assert (body["agent"], body["region"]) == ("eu-1", "eu")
    assert [c["id"] for c in body["canaries"]] == ["default/secret@eu-1", "default/web@eu-1"]
    [check] = body["canaries"][0]["checks"]
    assert check["type"] == "http"
    assert check["url"] == "https://example.com/health"
    assert check["headers"] == [{"name": "Authorization", "value": "s3cret-value"}]
    assert check["timeout_ms"] == 10_000
    assert response.headers["etag"].startswith('"')


def test_secrets_are_never_stored_in_the_state(server: InProcessServer, tmp_path: Path) -> None:
    pull(server, server.token("eu-1"))
    server.stop()
    with duckdb.connect(str(tmp_path / "state.duckdb"), read_only=True) as connection:
        specs = " ".join(
            row[0] for row in connection.execute("SELECT spec FROM resources").fetchall()
        )
    assert "s3cret-value" not in specs
    assert "TEST_API_TOKEN" in specs


def test_if_none_match_gives_304_without_a_body(server: InProcessServer) -> None:
    token = server.token("us-1")
    first = pull(server, token)
    second = pull(server, token, first.headers["etag"])
    assert second.status_code == 304
    assert second.content == b""
    assert second.headers["etag"] == first.headers["etag"]


def test_unknown_token_is_401_and_rotation_revokes(server: InProcessServer) -> None:
    assert pull(server, "cra_eu-1.not-the-token").status_code == 401
    assert server.client.get("/api/agent/targets").status_code == 401
    old = server.token("eu-1")
    new = server.token("eu-1")
    assert pull(server, old).status_code == 401
    assert pull(server, new).status_code == 200


def test_commit_changes_the_etag_and_disabling_gives_403(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    token = server.token("us-1")
    etag = pull(server, token).headers["etag"]

    repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/v2"))
    repo.commit("change web")
    assert server.webhook().status_code == 202
    wait_for(lambda: pull(server, token, etag).status_code == 200, 5, "a new ETag")
    assert pull(server, token).json()["canaries"][0]["checks"][0]["url"] == "https://example.com/v2"

    repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us", False))
    repo.commit("disable us-1")
    server.webhook()
    wait_for(lambda: pull(server, token).status_code == 403, 5, "403 for a disabled agent")
    assert "agent us-1 is disabled" in pull(server, token).text


def test_disabled_region_gives_403(server: InProcessServer, repo: ConfigRepo) -> None:
    token = server.token("eu-1")
    repo.write("regions.yaml", region_doc("eu", enabled=False) + "---\n" + region_doc("us"))
    repo.commit("disable eu")
    server.webhook()
    wait_for(lambda: pull(server, token).status_code == 403, 5, "403 for a disabled region")
    assert "region eu is disabled" in pull(server, token).text


def test_bad_commit_keeps_the_last_good_revision(server: InProcessServer, repo: ConfigRepo) -> None:
    token = server.token("eu-1")
    good = server.status()["current_revision"]["sha"]
    etag = pull(server, token).headers["etag"]

    repo.write("canaries/web.yaml", canary_doc("web").replace("url:", "uri:"))
    bad = repo.commit("typo")
    server.webhook()
    wait_for(lambda: server.status()["last_attempt"]["revision"]["sha"] == bad, 5, "attempt")

    status = server.status()
    assert status["current_revision"]["sha"] == good
    assert status["last_attempt"]["applied"] is False
    assert any("canaries/web.yaml:11:7" in e and "unknown field 'uri'" in e
               for e in status["last_attempt"]["errors"])  # fmt: skip
    assert pull(server, token, etag).status_code == 304, "the last good config keeps serving"
    assert "not applied" in server.logs()


def test_webhook_signature(server: InProcessServer) -> None:
    assert server.webhook().status_code == 202
    assert server.client.post("/hooks/git", content=b"{}").status_code == 401
    forged = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert server.client.post("/hooks/git", content=b"{}", headers=forged).status_code == 401


def _row(canary: str, check: str = "check", **overrides: Any) -> dict[str, Any]:
    row = {
        "canary": canary,
        "check": check,
        "started_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "duration_ms": 12.5,
        "status": "pass",
        "code": 200,
        "phases": {"connect_ms": 1.0, "first_byte_ms": 10.0, "total_ms": 12.5},
    }
    row.update(overrides)
    return row


def post(server: InProcessServer, token: str, rows: list[Any], **extra: Any) -> Any:
    return server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {token}"},
        content=json.dumps({"results": rows, **extra}),
    )


def test_ingest_drops_bad_rows_by_reason_and_keeps_the_rest(server: InProcessServer) -> None:
    token = server.token("eu-1")
    now = datetime.now(UTC)
    rows = [
        _row("default/web@eu-1"),
        _row("default/web@eu-1", started_at=(now - timedelta(seconds=9)).isoformat()),
        _row("default/web@eu-1", status="maybe"),
        {"canary": "default/web@eu-1"},
        _row("default/web@eu-1", started_at=(now + timedelta(minutes=10)).isoformat()),
        _row("default/web@eu-1", started_at=(now - timedelta(days=3)).isoformat()),
        _row("default/web@us-1"),
        _row("default/web@eu-1", check="nope"),
    ]
    response = post(server, token, rows)
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "dropped": {
            "malformed": 2,
            "clock_skew": 1,
            "too_old": 1,
            "unassigned_canary": 1,
            "unknown_check": 1,
        },
    }
    metrics = server.client.get("/metrics").text
    assert 'reconciler_ingest_rows_dropped_total{reason="malformed"} 2' in metrics
    assert 'reconciler_ingest_rows_total{outcome="accepted"} 2' in metrics


def test_resending_a_batch_is_idempotent(server: InProcessServer, tmp_path: Path) -> None:
    token = server.token("eu-1")
    rows = [
        _row("default/web@eu-1", started_at=(datetime.now(UTC) - timedelta(seconds=i)).isoformat())
        for i in range(1, 4)
    ]
    assert post(server, token, rows).json()["accepted"] == 3
    again = post(server, token, rows).json()
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    server.stop()
    with duckdb.connect(str(tmp_path / "state.duckdb"), read_only=True) as connection:
        stored = connection.execute(
            "SELECT agent, region, canary, check_name, status, code, duration_ms FROM results"
        ).fetchall()
    assert stored == [("eu-1", "eu", "default/web@eu-1", "check", "pass", 200, 12.5)] * 3


def test_region_and_agent_come_from_the_token(server: InProcessServer, tmp_path: Path) -> None:
    token = server.token("eu-1")
    spoofed = _row("default/web@eu-1") | {"region": "us", "agent": "us-1"}
    response = post(server, token, [spoofed, _row("default/web@eu-1")])
    # Unknown keys make a row malformed; the agent and region of stored rows are the token's.
    assert response.json()["dropped"] == {"malformed": 1}
    server.stop()
    with duckdb.connect(str(tmp_path / "state.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT DISTINCT agent, region FROM results").fetchall() == [
            ("eu-1", "eu")
        ]


def test_agent_clock_skew_drops_the_batch(server: InProcessServer) -> None:
    token = server.token("eu-1")
    late = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    response = post(server, token, [_row("default/web@eu-1")], sent_at=late)
    assert response.json()["dropped"] == {"clock_skew": 1}


@pytest.mark.parametrize("sent_at", ["9999-12-31T23:59:59Z", 123])
def test_an_empty_batch_from_a_skewed_clock_reports_no_drop_reason(
    server: InProcessServer, sent_at: Any
) -> None:
    response = post(server, server.token("eu-1"), [], sent_at=sent_at)
    assert response.status_code == 200, response.text
    # Only reasons with a count appear (docs/agent-protocol.md): not `{"clock_skew": 0}`.
    assert response.json() == {"accepted": 0, "duplicates": 0, "dropped": {}}


def test_oversized_batch_is_413(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_in_process(repo.path, tmp_path / "s.duckdb", max_batch_bytes=2000) as server:
        server.wait_ready()
        token = server.token("eu-1")
        response = post(server, token, [_row("default/web@eu-1")] * 50)
        assert response.status_code == 413
        assert post(server, token, [_row("default/web@eu-1")]).status_code == 200


@pytest.mark.slow
def test_sigterm_stores_accepted_results_and_exits_zero(repo: ConfigRepo, tmp_path: Path) -> None:
    with running_server(repo.path, tmp_path / "state.duckdb", ENV) as server:
        server.wait_ready()
        token = server.token("eu-1")
        response = server.client.post(
            "/api/agent/results",
            headers={"Authorization": f"Bearer {token}"},
            content=json.dumps({"results": [_row("default/web@eu-1")]}),
        )
        assert response.json()["accepted"] == 1
        assert server.stop() == 0
        assert "every accepted result is stored" in server.log.read_text()
