"""Per-check Prometheus series on /metrics, parsed as Prometheus parses them, and the alert
rules and dashboard shipped in docs/ checked against the names the server exposes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.core.probe_metrics import ProbeRun, render
from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import wait_for

RULES = ROOT / "docs" / "prometheus" / "canary-reconciler-rules.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "canary-reconciler-dashboard.json"


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web", selector="['*']", namespace="shop"))
    config_repo.commit("initial")
    return config_repo


@contextlib.contextmanager
def start(repo: ConfigRepo, tmp_path: Path, level: str) -> Iterator[InProcessServer]:
    with running_in_process(repo.path, tmp_path / "state.duckdb", probe_metrics=level) as server:
        server.wait_ready()
        yield server


def ship(server: InProcessServer, agent: str, status: str, **row: Any) -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    body = {
        "canary": f"shop/web@{agent}",
        "check": "check",
        "started_at": started.isoformat(),
        "duration_ms": 250.0,
        "status": status,
        "code": 200 if status == "pass" else 503,
        "phases": {
            "connect_ms": 2.0,
            "tls_ms": 8.0,
            "first_byte_ms": 120.0,
            "total_ms": 250.0,
            "cert_not_after": 1_800_000_000.0,
        },
        **row,
    }
    answer = server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {server.token(agent)}"},
        content=json.dumps({"results": [body]}),
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text


def samples(server: InProcessServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics by family name and sorted labels."""
    text = server.client.get("/metrics").text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(agent: str, region: str, **extra: str) -> tuple[tuple[str, str], ...]:
    values = {"canary": "web", "namespace": "shop", "check": "check", "region": region,
              "agent": agent, "type": "http", **extra}  # fmt: skip
    return tuple(sorted(values.items()))


@pytest.mark.parametrize("level", ["basic", "full"])
def test_each_check_has_blackbox_series(repo: ConfigRepo, tmp_path: Path, level: str) -> None:
    with start(repo, tmp_path, level) as server:
        ship(server, "eu-1", "pass")
        ship(server, "us-1", "fail")
        found = samples(server)
        eu, us = labels("eu-1", "eu"), labels("us-1", "us")
        assert found["probe_success"] == {eu: 1.0, us: 0.0}
        assert found["probe_duration_seconds"][eu] == 0.25
        assert found["probe_ssl_earliest_cert_expiry"][eu] == 1_800_000_000.0
        started = found["probe_last_run_timestamp_seconds"][eu]
        assert abs(started - (datetime.now(UTC).timestamp() - 5)) < 60
        if level == "basic":
            assert "probe_http_status_code" not in found
            assert "probe_http_duration_seconds" not in found
            assert "probe_degraded" not in found
        else:
            assert found["probe_degraded"] == {eu: 0.0, us: 0.0}
            assert found["probe_http_status_code"] == {eu: 200.0, us: 503.0}
            phases = found["probe_http_duration_seconds"]
            assert phases[labels("eu-1", "eu", phase="connect")] == 0.002
            assert phases[labels("eu-1", "eu", phase="processing")] == 0.12
            assert len(phases) == 6  # connect, tls, processing for both


def test_off_exposes_none(repo: ConfigRepo, tmp_path: Path) -> None:
    with start(repo, tmp_path, "off") as server:
        ship(server, "eu-1", "pass")
        assert "probe_success" not in samples(server)
        assert "reconciler_ready" in samples(server)  # the server's own series stay


def test_label_values_are_escaped() -> None:
    run = ProbeRun('ns/we"b', "eu", "a\\1", "line\nbreak", "http", True, 1.0, 1.0, None, None)
    [family] = [f for f in text_string_to_metric_families(render([run], "basic"))][:1]
    sample = family.samples[0]
    assert sample.labels["canary"] == 'we"b' and sample.labels["agent"] == "a\\1"
    assert sample.labels["check"] == "line\nbreak"


def metric_names(text: str) -> set[str]:
    """Names in PromQL expressions: identifiers followed by `{`, `)` or a space, that look
    like our series (probe_* and reconciler_*)."""
    return set(re.findall(r"\b((?:probe|reconciler)_[a-z_]+)\b", text))


def test_the_shipped_rules_and_dashboard_use_series_the_server_exposes(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    with running_in_process(repo.path, state, probe_metrics="full", site_interval=0.5) as server:
        server.wait_ready()
        ship(server, "eu-1", "pass")
        # The site's series come with its first build.
        wait_for(
            lambda: "reconciler_site_last_build_timestamp_seconds" in samples(server),
            30,
            "the status site built",
        )
        exposed = {name.removesuffix("_total") for name in samples(server)} | set(samples(server))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    )
    used = metric_names(RULES.read_text()) | metric_names(expressions)
    assert used and used <= exposed, used - exposed


# `make` puts promtool beside the interpreter (.venv/bin) when the system has none.
PROMTOOL = shutil.which(
    "promtool", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus) is not installed")
def test_promtool_accepts_the_shipped_rules() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
