"""Synthetic samples of canary analysis, read from a real state file: which check results
count for which traffic group."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from reconciler.store.deployments import synthetic_metrics
from tests.conftest import ConfigRepo, agent_doc, region_doc, run_cli
from tests.rows import RESULT_COLUMNS_V1

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: probes
spec:
  schedule: '@every 30s'
  agentSelector: ['eu-1', 'us-1']
  http:
    - name: stable
      url: http://10.0.0.5:80/checkout/health
    - name: canary
      url: http://10.0.0.6:80/checkout/health?deep=1
    - name: elsewhere
      url: http://10.0.0.5:8080/
    - name: near-miss
      url: http://10.0.0.7:80/application/health
    - name: bare
      url: http://10.0.0.7:80/app
"""

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def state(config_repo: ConfigRepo, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canary.yaml", CANARY)
    config_repo.commit("probes")
    path = tmp_path / "state.duckdb"
    applied = run_cli("apply", "--repo", config_repo.path, "--state", path, "--auto-approve")
    assert applied.code == 0, applied.err
    with duckdb.connect(str(path)) as connection:
        yield connection


def record(
    connection: duckdb.DuckDBPyConnection, agent: str, check: str, seconds: float,
    status: str = "pass", duration_ms: float = 10.0,
) -> None:  # fmt: skip
    """One HTTP check result `seconds` after T0."""
    region = agent.split("-")[0]
    connection.execute(
        f"INSERT INTO results ({RESULT_COLUMNS_V1}) "
        "VALUES (?, ?, ?, 'default/probes', ?, 'http', ?, ?, ?, 200,"
        " NULL, NULL, ?)",
        [agent, region, f"default/probes@{agent}", check, T0 + timedelta(seconds=seconds),
         duration_ms, status, T0],
    )  # fmt: skip


GROUPS = {"stable": ["http://10.0.0.5:80"], "canary": ["http://10.0.0.6:80/"]}


def test_a_check_on_a_groups_backend_counts_for_that_group(
    state: duckdb.DuckDBPyConnection,
) -> None:
    for second in range(4):
        record(state, "eu-1", "canary", second, status="fail" if second % 2 else "pass")
        record(state, "us-1", "canary", second, duration_ms=100.0)
    found = synthetic_metrics(state, GROUPS, T0)
    runs, errors, p99 = found["canary"]
    assert (runs, errors) == (8, 2)
    assert p99 is not None and 90.0 < p99 <= 100.0
    assert "stable" not in found, "no run of a check on the stable backend yet"


def test_each_check_counts_for_its_own_group_only(state: duckdb.DuckDBPyConnection) -> None:
    for second in range(3):
        record(state, "eu-1", "stable", second)
    record(state, "eu-1", "canary", 0, status="fail")
    found = synthetic_metrics(state, GROUPS, T0)
    assert found["stable"][:2] == (3, 0)
    assert found["canary"][:2] == (1, 1)


def test_runs_before_the_step_started_are_left_out(state: duckdb.DuckDBPyConnection) -> None:
    record(state, "eu-1", "canary", 0, status="fail")
    record(state, "eu-1", "canary", 10)
    assert synthetic_metrics(state, GROUPS, T0 + timedelta(seconds=5))["canary"][:2] == (1, 0)


def test_a_backend_url_claims_only_urls_under_it(state: duckdb.DuckDBPyConnection) -> None:
    for check in ("elsewhere", "near-miss", "bare"):
        record(state, "eu-1", check, 0)
    groups = {"stable": ["http://10.0.0.5:80"], "app": ["http://10.0.0.7:80/app"]}
    found = synthetic_metrics(state, groups, T0)
    # http://10.0.0.5:80 is not a prefix of http://10.0.0.5:8080/ in URL terms, nor is
    # .../app of .../application; the check on exactly .../app is the app group's.
    assert found == {"app": (1, 0, 10.0)}


def test_groups_without_backends_or_runs_are_absent(state: duckdb.DuckDBPyConnection) -> None:
    assert synthetic_metrics(state, {"stable": [], "canary": []}, T0) == {}
    assert synthetic_metrics(state, GROUPS, T0) == {}
