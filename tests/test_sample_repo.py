"""sample-repo/ is the config a newcomer learns from: it must validate and plan cleanly."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.core.selector import LOCAL
from reconciler.session import Session
from tests.conftest import SAMPLE_REPO, run_cli


def test_sample_repo_validates_without_errors_or_warnings() -> None:
    result = run_cli("validate", "--repo", SAMPLE_REPO, "-q")
    assert result.code == 0, result.out
    assert "Warning" not in result.out


def test_sample_repo_plans_cleanly(tmp_path: Path) -> None:
    result = run_cli(
        "plan", "--repo", SAMPLE_REPO, "--state", tmp_path / "s.duckdb", "--format", "json"
    )
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["diagnostics"] == []
    assert plan["summary"]["change"] == plan["summary"]["destroy"] == 0
    assert {run["route"] for run in plan["canary_runs"]} == {"api", "checkout"}


def test_sample_repo_covers_what_it_promises() -> None:
    loaded = Session().load(SAMPLE_REPO)
    assert loaded.desired is not None
    config = loaded.result.config
    assert len(config.regions) >= 4
    assert len(config.agents) >= 6
    assert len(config.canaries) >= 8
    assert len(config.routes) >= 2
    derived = [r for r in loaded.desired.resources.values() if r.kind == "DerivedCanary"]
    covered_agents = {r.agent for r in derived}
    assert LOCAL in covered_agents
    assert {a for a in config.agents} - covered_agents, "an agent is left out of every canary"
    assert "us-east-staging" not in {
        r.agent for r in derived if r.parent in ("platform/public-dns", "web/status-page")
    }, "exclusion patterns leave the staging agent out"
    check_types = {t for c in config.canaries.values() for t, _, _ in c.model.spec.checks()}
    assert check_types == {"http", "tcp", "dns", "tls", "icmp", "multihttp", "grpc", "browser"}
    selectors = [c.model.spec.agentSelector for c in config.canaries.values()]
    assert None in selectors, "one canary has no selector (control plane only)"
    patterns = [p for s in selectors if s for p in s]
    assert "*" in patterns and LOCAL in patterns
    assert any(p.startswith("!") for p in patterns)
    assert any(s and all(p.startswith("!") for p in s) for s in selectors), "exclusion-only"
    assert any(p.endswith("*") and len(p) > 1 for p in patterns), "prefix glob"
    assert any(p.startswith("*") and len(p) > 1 and not p.endswith("*") for p in patterns)
    assert any(p.count("*") == 2 or ("*" in p.strip("*")) for p in patterns), "middle glob"
    assert any(p in config.agents for p in patterns), "an exact agent name"
    assert any(len(r.model.spec.traffic_split or []) == 3 for r in config.routes.values())
    apis = {c.model.apiVersion for c in config.canaries.values()}
    assert "canaries.flanksource.com/v1" in apis


def test_every_sample_file_names_its_json_schema() -> None:
    for path in sorted(SAMPLE_REPO.rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert schema.is_file(), f"{path}: {schema} does not exist"
