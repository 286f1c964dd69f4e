"""Maintenance windows on the server (in process): runs marked, no incident, no notification,
uptime without them; ad-hoc windows opened and closed through the operator API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from reconciler.store.db import open_state
from tests.conftest import ConfigRepo, agent_doc, region_doc, run_cli
from tests.inprocess import InProcessServer, running_in_process
from tests.server import ADMIN_TOKEN, wait_for
from tests.test_notify import Receiver

READ_TOKEN = "maintenance-read-secret"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PERIOD = timedelta(minutes=5)  # the incident controller looks back 4 periods

CANARY = """apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
  labels: {{team: {team}}}
spec:
  schedule: '@every 5m'
  agentSelector: ['eu-1']
  incidentPolicy: any
  failureThreshold: 2
  http:
    - name: check
      url: https://example.com/{name}
"""


def window_doc(name: str, start: datetime, end: datetime, selector: str) -> str:
    return f"""apiVersion: canary-reconciler/v1
kind: Maintenance
metadata:
  name: {name}
spec:
  description: Database upgrade
  canaries: {selector}
  start: {start.isoformat()}
  end: {end.isoformat()}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(failures=0)
    yield hook
    hook.server.shutdown()


def make_repo(path: Path, now: datetime) -> ConfigRepo:
    """`web` and `db` (team data) are covered by a window open from 12 minutes ago for an
    hour; `api` is not."""
    repo = ConfigRepo(path)
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    for name, team in (("web", "data"), ("api", "shop"), ("db", "data")):
        repo.write(f"canaries/{name}.yaml", CANARY.format(name=name, team=team))
    window = window_doc(
        "db-upgrade",
        now - timedelta(minutes=12),
        now + timedelta(hours=1),
        "{labels: {team: data}}",
    )
    repo.write("maintenance/db-upgrade.yaml", window)
    repo.commit("initial")
    return repo


def post(server: InProcessServer, canary: str, runs: list[tuple[datetime, str]]) -> None:
    rows = [
        {
            "canary": f"default/{canary}@eu-1",
            "check": "check",
            "started_at": started.isoformat(),
            "duration_ms": 12.0,
            "status": status,
        }
        for started, status in runs
    ]
    response = server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {server.token('eu-1')}"},
        content=json.dumps({"results": rows}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(rows), response.text


def incidents(server: InProcessServer) -> dict[str, str]:
    response = server.client.get("/api/v1/incidents", headers=READ)
    assert response.status_code == 200, response.text
    return {i["canary"]: i["state"] for i in response.json()["incidents"]}


def uptime(server: InProcessServer, target: str) -> tuple[int, int]:
    response = server.client.get(f"/api/v1/targets/{target}/uptime", headers=READ)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["total"], body["passed"]


def metric(server: InProcessServer, line_start: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {line_start} in /metrics")


def test_a_window_keeps_incidents_and_notifications_away_and_uptime_leaves_it_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo(tmp_path / "config", now)
    state = tmp_path / "state.duckdb"
    env = {
        "RECONCILER_INCIDENT_INTERVAL": "0.05",
        "RECONCILER_READ_TOKEN": READ_TOKEN,
        "RECONCILER_NOTIFY_URLS": receiver.url,
    }
    before = [(now - timedelta(minutes=50) + i * PERIOD, "pass") for i in range(2)]
    during = [(now - timedelta(minutes=10) + i * PERIOD, "fail") for i in range(3)]
    with running_in_process(repo.path, state, env) as server:
        server.wait_ready()
        # The same runs: two passes before the window, three failures inside it.
        post(server, "web", before + during)
        post(server, "api", before + during)
        # db failed before the window opened: its incident opens now, inside the window.
        post(server, "db", [(now - timedelta(minutes=m), "fail") for m in (14, 13)])
        wait_for(
            lambda: incidents(server) == {"default/api": "open", "default/db": "open"},
            10,
            "incidents for api and db, none for web",
        )
        wait_for(lambda: len(receiver.received) >= 1, 10, "the api incident notified")
        delivered = [orjson.loads(body) for _, body in receiver.received]
        assert [(e["type"], e["canary"]) for e in delivered] == [("incident_opened", "default/api")]
        suppressed = 'reconciler_notifications_suppressed_total{reason="maintenance"}'
        assert metric(server, suppressed) == 1
        assert metric(server, "reconciler_ingest_rows_maintenance_total") == 3
        # Uptime: the three failures in the window are left out for web, counted for api.
        assert uptime(server, "default.web") == (2, 2)
        assert uptime(server, "default.api") == (5, 2)
        targets = server.client.get("/api/v1/targets", headers=READ).json()["targets"]
        statuses = {t["id"]: t["status"] for t in targets}
        assert statuses == {
            "default.web": "under_maintenance",
            "default.db": "under_maintenance",
            "default.api": "major_outage",
        }
        listed = server.client.get("/api/v1/maintenance", headers=READ)
        assert listed.status_code == 200, listed.text
        (active,) = listed.json()["active"]
        assert active["name"] == "db-upgrade"
        assert active["canaries"] == ["default/db", "default/web"]
    connection = open_state(state)
    assert connection is not None
    with connection:
        marked = connection.execute(
            "SELECT parent, count(*) FILTER (WHERE maintenance) FROM results GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert marked == [("default/api", 0), ("default/db", 0), ("default/web", 3)]
    site = tmp_path / "site"
    built = run_cli("site", "build", "--state", state, "--out", site)
    assert built.code == 0, built.err
    page = _canary_page(site, "web")
    assert "100%" in _uptime_figure(page), "the site's uptime leaves the window out"
    assert 'kpi-label">Status</span> <span class="kpi-value">Under maintenance<' in page
    assert "In progress" in page and "db-upgrade" in page and "Database upgrade" in page
    api = _canary_page(site, "api")
    assert "40" in _uptime_figure(api) and "db-upgrade" not in api
    status = (site / "status.html").read_text()
    assert "db-upgrade" in status and "default/db, default/web" in status
    assert "db-upgrade" in (site / "index.html").read_text()
    sla = (site / "sla" / "default.web.html").read_text()
    assert "Database upgrade" in sla and "left out of uptime" in sla


def _canary_page(site: Path, name: str) -> str:
    return (site / "canary" / f"default.{name}.html").read_text()


def _uptime_figure(html: str) -> str:
    found = re.search(r'kpi-label">Uptime[^<]*</span> <span class="kpi-value">([^<]*)<', html)
    assert found, "no uptime figure"
    return found.group(1)


def _admin(server: InProcessServer, method: str, path: str, body: Any = None) -> Any:
    response = server.client.request(
        method, path, headers=ADMIN, content=None if body is None else json.dumps(body)
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_an_ad_hoc_window_opened_and_closed_through_the_operator_api(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo(tmp_path / "config", now)
    commits = int(repo.git("rev-list", "--count", "HEAD"))
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        opened = _admin(
            server,
            "POST",
            "/operator/maintenance",
            {
                "name": "api-hotfix",
                "canaries": {"names": ["api"]},
                "regions": ["eu"],
                "duration": "2h",
                "description": "Hotfix deploy",
            },
        )
        assert opened["changed"] is True
        assert opened["window"]["selected"] == ["default/api"]
        assert repo.git("log", "-1", "--format=%s").startswith(
            "operator: open maintenance window api-hotfix until "
        )
        listed = _admin(server, "GET", "/operator/maintenance")
        assert {w["name"] for w in listed["active"]} == {"api-hotfix", "db-upgrade"}
        assert server.parts.control.maintenance.windows_for("default/api@eu-1")
        post(server, "api", [(datetime.now(UTC), "fail")])
        assert metric(server, "reconciler_ingest_rows_maintenance_total") == 1

        closed = _admin(server, "POST", "/operator/maintenance/api-hotfix/close")
        assert closed["changed"] is True
        assert repo.git("log", "-1", "--format=%s").startswith(
            "operator: close maintenance window api-hotfix at "
        )
        end = datetime.fromisoformat(closed["window"]["end"])
        assert end - datetime.now(UTC) <= timedelta(seconds=1)
        wait_for(
            lambda: (
                {w["name"] for w in _admin(server, "GET", "/operator/maintenance")["active"]}
                == {"db-upgrade"}
            ),
            5,
            "the closed window no longer open",
        )
        again = server.client.post("/operator/maintenance/api-hotfix/close", headers=ADMIN)
        assert again.status_code == 409, again.text
        assert "already over" in again.json()["error"]
        unknown = server.client.post("/operator/maintenance/nope/close", headers=ADMIN)
        assert unknown.status_code == 404
        bad = server.client.post(
            "/operator/maintenance",
            headers=ADMIN,
            content=json.dumps({"name": "x", "canaries": {}, "duration": "1h"}),
        )
        assert bad.status_code == 422 and "selects nothing" in bad.text
    assert int(repo.git("rev-list", "--count", "HEAD")) == commits + 2
    document = repo.git("show", "HEAD:maintenance/api-hotfix.yaml")
    assert "kind: Maintenance" in document and "names: [api]" in document
    assert repo.git("status", "--porcelain") == ""


def test_an_incident_that_opened_in_a_window_pages_when_the_window_closes(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo(tmp_path / "config", now)
    env = {
        "RECONCILER_INCIDENT_INTERVAL": "0.05",
        "RECONCILER_READ_TOKEN": READ_TOKEN,
        "RECONCILER_NOTIFY_URLS": receiver.url,  # the legacy hooks: no routing, no reminders
    }
    with running_in_process(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        # db failed just before the window opened: its incident opens inside it, unpaged.
        post(server, "db", [(now - timedelta(minutes=m), "fail") for m in (14, 13)])
        wait_for(lambda: incidents(server) == {"default/db": "open"}, 10, "the db incident")
        suppressed = 'reconciler_notifications_suppressed_total{reason="maintenance"}'
        wait_for(lambda: metric(server, suppressed) == 1, 10, "the open held back")
        assert receiver.received == []
        _admin(server, "POST", "/operator/maintenance/db-upgrade/close")
        # The incident outlived the window: the page goes out now.
        wait_for(lambda: len(receiver.received) >= 1, 10, "the held open sent")
        delivered = [orjson.loads(body) for _, body in receiver.received]
        assert [(e["type"], e["canary"]) for e in delivered] == [("incident_opened", "default/db")]
