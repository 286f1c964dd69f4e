"""agentSelector: the documented pattern table and exact rules (docs/yaml-reference.md)."""

from __future__ import annotations

import pytest

from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config
from reconciler.core.selector import select_agents
from tests.conftest import agent_doc, canary_doc, region_doc

AGENTS = [
    "agent-1",
    "agent-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-prod",
    "eu-west-prod",
    "us-east-prod",
    "us-test",
    "staging",
    "team-a",
    "team-b",
    "api-dev",
    "api-staging",
]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        # Seed 000's pattern table, row by row.
        (["agent-1"], ["agent-1"]),
        (["eu-west-*"], ["eu-west-1", "eu-west-2", "eu-west-prod"]),
        (["*-prod"], ["eu-central-prod", "eu-west-prod", "us-east-prod"]),
        (
            ["!staging"],
            [a for a in AGENTS if a != "staging"],
        ),
        (["team-*", "!team-b"], ["team-a"]),
        # Globs in the middle and character classes.
        (["eu-*-prod"], ["eu-central-prod", "eu-west-prod"]),
        (["agent-?"], ["agent-1", "agent-2"]),
        (["eu-west-[12]"], ["eu-west-1", "eu-west-2"]),
        # Exclusions win whatever their order.
        (["!team-b", "team-*"], ["team-a"]),
        (["*", "!*"], []),
        # Exclusion-only lists: every agent except those.
        (["!*-dev", "!*-staging"], [a for a in AGENTS if a not in ("api-dev", "api-staging")]),
        # Seed 000's regional example.
        (
            ["eu-*", "us-*", "!us-test", "local"],
            ["eu-west-1", "eu-west-2", "eu-central-prod", "eu-west-prod", "us-east-prod"],
        ),
        # Globs match whole names.
        # As canary-checker: case is ignored and spaces around a pattern are trimmed.
        ([" EU-WEST-* "], ["eu-west-1", "eu-west-2", "eu-west-prod"]),
        (["* ", "! Team-B"], [a for a in AGENTS if a != "team-b"]),
        (["agent"], []),
    ],
)
def test_pattern_table(selector: list[str], expected: list[str]) -> None:
    assert sorted(select_agents(selector, AGENTS).agents) == sorted(expected)


@pytest.mark.parametrize(
    ("selector", "agents", "local"),
    [
        (None, [], True),  # no selector: the control plane only
        ([], [], True),
        (["local"], [], True),
        (["*"], AGENTS, False),  # a bare '*' does not include the control plane
        (["*", "local"], AGENTS, True),
        (["local", "!local"], AGENTS, False),  # the exclusion wins over 'local' too
        (["!local"], AGENTS, False),  # exclusion-only: every agent except the control plane
        (["!staging", "local"], [a for a in AGENTS if a != "staging"], True),
    ],
)
def test_local_handling(selector: list[str] | None, agents: list[str], local: bool) -> None:
    selection = select_agents(selector, AGENTS)
    assert sorted(selection.agents) == sorted(agents)
    assert selection.local is local


def _derived(*documents: str, local_region: str = "default") -> set[str]:
    content = "\n---\n".join(documents).encode()
    loaded = load_config([SourceFile("all.yaml", "sha", lambda: content)])
    assert loaded.ok, [d.format() for d in loaded.diagnostics]
    desired = compile_config(loaded.config, local_region)
    return {r.name for r in desired.resources.values() if r.kind == "DerivedCanary"}


def test_disabled_agents_and_regions_get_no_derived_canaries() -> None:
    derived = _derived(
        region_doc("eu"),
        region_doc("us", enabled=False),
        agent_doc("eu-1", "eu"),
        agent_doc("eu-2", "eu", enabled=False),
        agent_doc("us-1", "us"),
        canary_doc("web", selector="['*', 'local']"),
    )
    assert derived == {"default/web@eu-1", "default/web@local"}


def test_local_canaries_follow_the_control_plane_region() -> None:
    documents = (region_doc("fra", enabled=False), canary_doc("db", selector="['local']"))
    assert _derived(*documents, local_region="fra") == set()
    assert _derived(*documents, local_region="other") == {"default/db@local"}


def test_a_selector_that_matches_nothing_is_a_warning() -> None:
    content = "\n---\n".join([region_doc("eu"), canary_doc("web", selector="['us-*']")]).encode()
    loaded = load_config([SourceFile("web.yaml", "sha", lambda: content)])
    desired = compile_config(loaded.config)
    [warning] = desired.diagnostics
    assert warning.severity == "warning"
    line = content.decode().splitlines().index("  agentSelector: ['us-*']") + 1
    assert warning.format().startswith(f"web.yaml:{line}:3: Canary/default/web:")
    assert "matches no enabled agent" in warning.message


def test_derived_identity_is_namespace_name_at_agent() -> None:
    derived = _derived(
        region_doc("eu"),
        agent_doc("eu-1", "eu"),
        canary_doc("api", selector="['eu-*']", namespace="monitoring"),
    )
    assert derived == {"monitoring/api@eu-1"}
