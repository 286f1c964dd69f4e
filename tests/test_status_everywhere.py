"""One status everywhere: the read API, the overview, the region pages, the canary pages and the
public status page of a real server say the same thing about the same runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import ServerProcess, running_server, wait_for

# Real processes (a server, agents): the end-to-end tier.
pytestmark = pytest.mark.slow

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
  namespace: web
spec:
  schedule: '@every 1m'
  agentSelector: ['*']{extra}
  http:
    - name: check
      url: https://example.com/{name}
"""

# Runs one minute apart, oldest first, ending 30 s ago, per canary and agent: p(ass), f(ail).
RUNS = {
    # The web/search: 1 of 3 runs failed in eu, no incident: a partial outage.
    "search": {"eu-1": "pfp", "us-1": "ppp"},
    # Three failed runs in a row in both regions: the majority policy holds, an incident opens.
    "checkout": {"eu-1": "fff", "us-1": "fff"},
    "home": {"eu-1": "ppp", "us-1": "ppp"},
    "idle": {},
    "paused": {},  # replicas: 0
}
EXPECTED = {
    "search": ("partial_outage", "Partial outage", {"eu": "partial_outage", "us": "operational"}),
    "checkout": ("major_outage", "Major outage", {"eu": "major_outage", "us": "major_outage"}),
    "home": ("operational", "Operational", {"eu": "operational", "us": "operational"}),
    "idle": ("unknown", "No recent data", {"eu": "unknown", "us": "unknown"}),
    "paused": ("paused", "Paused", {"eu": "paused", "us": "paused"}),
}
LABELS = {status: label for status, label, _ in EXPECTED.values()}


def rows(canary: str, outcomes: str, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "canary": canary,
            "check": "check",
            "started_at": (now - timedelta(seconds=30 + 60 * (len(outcomes) - 1 - i))).isoformat(),
            "duration_ms": 20.0,
            "status": "pass" if outcome == "p" else "fail",
            "code": 200 if outcome == "p" else 503,
            "message": None if outcome == "p" else "unexpected status 503",
        }
        for i, outcome in enumerate(outcomes)
    ]


@pytest.fixture
def server(config_repo: ConfigRepo, tmp_path: Path) -> Iterator[ServerProcess]:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    for name in RUNS:
        extra = "\n  replicas: 0" if name == "paused" else ""
        config_repo.write(f"canaries/{name}.yaml", CANARY.format(name=name, extra=extra))
    config_repo.commit("five canaries")
    env = {"RECONCILER_INCIDENT_INTERVAL": "0.2"}
    with running_server(config_repo.path, tmp_path / "state.duckdb", env=env) as process:
        process.wait_ready()
        now = datetime.now(UTC)
        for agent in ("eu-1", "us-1"):
            batch = [
                row
                for name, per_agent in RUNS.items()
                for row in rows(f"web/{name}@{agent}", per_agent.get(agent, ""), now)
            ]
            response = process.client.post(
                "/api/agent/results",
                headers={"Authorization": f"Bearer {process.token(agent)}"},
                content=json.dumps({"results": batch}),
            )
            assert response.json()["accepted"] == len(batch), response.text
        yield process


def open_incidents(server: ServerProcess) -> list[str]:
    incidents = server.client.get("/api/v1/incidents").json()["incidents"]
    return [i["canary"] for i in incidents if i["state"] == "open"]


def badge(html: str, after: str) -> tuple[str, str]:
    """The status class and label of the first badge after `after` (a name on the page)."""
    found = re.search(
        re.escape(after) + r'.*?<span class="badge status-([a-z_]+)">([^<]+)</span>', html, re.S
    )
    assert found, after
    return found.group(1), found.group(2)


def test_every_surface_shows_the_same_status(server: ServerProcess, tmp_path: Path) -> None:
    wait_for(lambda: open_incidents(server) == ["web/checkout"], 20, "the checkout incident")

    targets = {t["id"]: t for t in server.client.get("/api/v1/targets").json()["targets"]}
    for name, (status, _, regions) in EXPECTED.items():
        target = targets[f"web.{name}"]
        assert target["status"] == status, name
        assert {r: s["status"] for r, s in target["region_status"].items()} == (
            regions if name != "idle" else {"eu": "unknown", "us": "unknown"}
        )
        table = server.client.get(f"/api/v1/targets/web.{name}/regions").json()["regions"]
        assert {r["region"]: r["status"] for r in table} == regions, name
    # The last run is shown beside the status, and does not decide it.
    assert targets["web.search"]["last_run"]["status"] == "pass"
    assert targets["web.search"]["region_status"]["eu"]["last_run"]["status"] == "pass"

    out = tmp_path / "site"
    built = server.admin("POST", "/api/site/build", json={"out": str(out)})
    assert built.status_code == 200, built.text
    overview = (out / "index.html").read_text()
    status_page = (out / "status.html").read_text()
    for name, (status, label, regions) in EXPECTED.items():
        key = f"web/{name}"
        assert badge(overview, f">{key}</a>") == (status, label), f"overview: {name}"
        assert badge(status_page, f">{key}</a>") == (status, label), f"status page: {name}"
        page = (out / "canary" / f"web.{name}.html").read_text()
        assert badge(page, "<h1>") == (status, label), f"canary page: {name}"
        for region, in_region in regions.items():
            region_page = (out / f"region-{region}.html").read_text()
            shown = (in_region, LABELS[in_region])
            assert badge(region_page, f">{key}</a>") == shown, f"region {region}: {name}"
            assert badge(page, f">{region}</a></th>") == shown, f"{name}'s {region} row"
    # The headline is the worst status; the flapping canary is not "Down".
    assert 'class="verdict status-major_outage"' in status_page and "Major outage" in status_page
    assert ">Down<" not in overview + status_page
    paused = (out / "canary" / "web.paused.html").read_text()
    assert "Paused: this canary never runs (it has <code>replicas: 0</code>" in paused
    assert "this canary never runs" not in (out / "canary" / "web.idle.html").read_text()
    search = (out / "canary" / "web.search.html").read_text()
    assert re.search(r'kpi-label">Last run</span> <span class="kpi-value">passed<', search)
    eu = (out / "region-eu.html").read_text()
    row = re.search(r">web/search</a></th>(.*?)</tr>", eu, re.S)
    assert row and "last run passed" in row.group(1)
    row = re.search(r">web/search</a></th>(.*?)</tr>", status_page, re.S)
    assert row and "last run passed" in row.group(1)  # the public status page too
