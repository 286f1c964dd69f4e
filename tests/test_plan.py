"""Plan transitions against real git repositories and DuckDB state files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from markdown_it import MarkdownIt

from reconciler.render.markdown import COMMENT_LIMIT
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc, run_cli


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents/eu-1.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("agents/us-1.yaml", agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web", selector="['*']"))
    config_repo.write("canaries/api.yaml", canary_doc("api", selector="['eu-*', 'local']"))
    config_repo.commit("initial")
    return config_repo


def plan_json(repo: ConfigRepo, state: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("plan", "--repo", repo.path, "--state", state, "--format", "json", *extra)
    assert result.code == 0, result.err
    document: dict[str, Any] = json.loads(result.out)
    return document


def apply(repo: ConfigRepo, state: Path) -> None:
    result = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve")
    assert result.code == 0, result.err


def actions(plan: dict[str, Any]) -> dict[str, str]:
    return {change["address"]: change["actions"][0] for change in plan["changes"]}


def test_first_plan_creates_everything(repo: ConfigRepo, tmp_path: Path) -> None:
    plan = plan_json(repo, tmp_path / "state.duckdb")
    assert plan["state"] is None
    assert plan["summary"] == {"add": 10, "change": 0, "destroy": 0}
    assert actions(plan)["derived_canary.default/api@local"] == "create"
    derived = [c for c in plan["changes"] if c["kind"] == "DerivedCanary"]
    assert {(c["parent"], c["agent"]) for c in derived} == {
        ("default/web", "eu-1"),
        ("default/web", "us-1"),
        ("default/api", "eu-1"),
        ("default/api", "local"),
    }
    assert not (tmp_path / "state.duckdb").exists(), "planning must not create the state file"


def test_adding_an_agent_creates_its_derived_canaries(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))

    plan = plan_json(repo, state)

    assert actions(plan) == {
        "agent.eu-2": "create",
        "derived_canary.default/api@eu-2": "create",
        "derived_canary.default/web@eu-2": "create",
    }
    reasons = {c["address"]: c["reason"] for c in plan["changes"]}
    assert reasons["derived_canary.default/web@eu-2"] == "new agent eu-2 matches the agentSelector"
    assert plan["state"]["serial"] == 1


def test_removing_an_agent_deletes_its_derived_canaries(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.remove("agents/us-1.yaml")

    plan = plan_json(repo, state)

    assert actions(plan) == {"agent.us-1": "delete", "derived_canary.default/web@us-1": "delete"}
    deleted = next(c for c in plan["changes"] if c["kind"] == "DerivedCanary")
    assert deleted["reason"] == "agent us-1 was removed"
    assert deleted["before"]["region"] == "us"
    assert deleted["after"] is None


def test_editing_a_parent_updates_each_derived_canary(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/v2"))

    plan = plan_json(repo, state)

    assert actions(plan) == {
        "canary.default/web": "update",
        "derived_canary.default/web@eu-1": "update",
        "derived_canary.default/web@us-1": "update",
    }
    for change in plan["changes"]:
        assert change["fields"] == [
            {
                "path": "http[check].url",
                "before": "https://example.com/",
                "after": "https://example.com/v2",
            }
        ]


def test_selector_edit_keeps_existing_derived_canaries(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.write("canaries/web.yaml", canary_doc("web", selector="['*', 'local']"))

    plan = plan_json(repo, state)

    # The parent's selector changed; existing derived canaries keep their identity and spec.
    assert actions(plan) == {
        "canary.default/web": "update",
        "derived_canary.default/web@local": "create",
    }


def test_text_plan_shows_field_changes_and_summary(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.write("canaries/web.yaml", canary_doc("web", url="https://example.com/v2"))

    result = run_cli("--plan", "--repo", repo.path, "--state", state)

    assert result.code == 0
    assert '  ~ derived_canary "default/web@eu-1" {' in result.out
    assert '      ~ http[check].url = "https://example.com/" -> "https://example.com/v2"' in (
        result.out
    )
    assert result.out.rstrip().endswith("Plan: 0 to add, 3 to change, 0 to destroy.")


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (None, 0),
        ("change", 2),
        ("invalid", 1),
    ],
)
def test_detailed_exitcode(repo: ConfigRepo, tmp_path: Path, edit: str | None, code: int) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    if edit == "change":
        repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))
    elif edit == "invalid":
        repo.write("agents/eu-2.yaml", agent_doc("eu-2", "nowhere"))

    result = run_cli("plan", "--repo", repo.path, "--state", state, "--detailed-exitcode")

    assert result.code == code, result.out + result.err
    if edit is None:
        assert "No changes." in result.out
    if edit == "invalid":
        assert "agents/eu-2.yaml:6:3: Agent/eu-2: spec.region: region 'nowhere'" in result.err


def test_plain_plan_exits_zero_with_changes(repo: ConfigRepo, tmp_path: Path) -> None:
    result = run_cli("plan", "--repo", repo.path, "--state", tmp_path / "state.duckdb")
    assert result.code == 0


def test_base_ref_diffs_two_commits_without_state(repo: ConfigRepo) -> None:
    first = repo.git("rev-parse", "HEAD")
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))
    repo.remove("canaries/api.yaml")
    second = repo.commit("add eu-2, drop api")
    repo.write("agents/junk.yaml", "this: [is not committed")  # the working tree is ignored

    result = run_cli(
        "plan", "--repo", repo.path, "--ref", second, "--base", first, "--format", "json"
    )

    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["state"] is None
    assert plan["revision"]["sha"] == second
    assert actions(plan) == {
        "agent.eu-2": "create",
        "canary.default/api": "delete",
        "derived_canary.default/api@eu-1": "delete",
        "derived_canary.default/api@local": "delete",
        "derived_canary.default/web@eu-2": "create",
    }
    deleted = {c["address"]: c["reason"] for c in plan["changes"] if c["actions"] == ["delete"]}
    assert deleted["derived_canary.default/api@eu-1"] == "its canary was removed"


def test_ref_in_a_subdirectory_of_the_repository(config_repo: ConfigRepo) -> None:
    config_repo.write("config/regions.yaml", region_doc("eu"))
    config_repo.write("README.md", "not config\n")
    sha = config_repo.commit()
    result = run_cli(
        "plan", "--repo", config_repo.path / "config", "--ref", "HEAD", "--base", "HEAD"
    )
    assert result.code == 0, result.err
    assert "No changes." in result.out
    assert sha[:12] in result.out


def test_unknown_ref_is_a_clear_error(repo: ConfigRepo) -> None:
    result = run_cli("plan", "--repo", repo.path, "--ref", "no-such-branch", "--base", "HEAD")
    assert result.code == 1
    assert "unknown git ref 'no-such-branch'" in result.err


def test_an_absent_commit_is_a_clear_error_whichever_way_it_is_given(repo: ConfigRepo) -> None:
    """A full SHA is looked up only when read; GitHub's `before` of a new branch is all zeros."""
    zeros, missing = "0" * 40, "1234567890" * 4
    for option in ("--ref", "--base"):
        for sha in (zeros, missing):
            result = run_cli("plan", "--repo", repo.path, option, sha)
            assert result.code == 1, result.out
            assert f"Error: unknown git ref '{sha}'" in result.err
            assert "Traceback" not in result.err
    result = run_cli("plan", "--repo", repo.path, "--base", zeros)
    assert "the all-zero SHA names no commit (CI gives it as the commit before" in result.err


def test_route_changes_start_canary_runs(config_repo: ConfigRepo, tmp_path: Path) -> None:
    route = (Path(__file__).parent.parent / "sample-repo" / "routes" / "checkout.yaml").read_text()
    config_repo.write("route.yaml", route)
    state = tmp_path / "state.duckdb"

    first = plan_json(config_repo, state)
    [run] = first["canary_runs"]
    assert run["route"] == "checkout"
    assert [step["weights"] for step in run["steps"]][2] == {"stable": 40, "beta": 20, "canary": 40}
    apply(config_repo, state)

    config_repo.write("route.yaml", route.replace("metadata:\n", "metadata:\n  labels: {a: b}\n"))
    assert plan_json(config_repo, state)["canary_runs"] == [], "a label edit starts no run"

    config_repo.write("route.yaml", route.replace("weight: 25", "weight: 30"))
    [rerun] = plan_json(config_repo, state)["canary_runs"]
    assert rerun["reason"] == "traffic split or canary changed"
    assert rerun["replaces"] == "checkout#1, pending"


def test_a_plan_says_which_run_in_flight_a_new_run_abandons(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    """A reviewer sees that merging stops a deployment half way: the run is superseded, not
    rolled back, and the route jumps to the new run's weights."""
    route = (Path(__file__).parent.parent / "sample-repo" / "routes" / "checkout.yaml").read_text()
    config_repo.write("route.yaml", route)
    state = tmp_path / "state.duckdb"
    apply(config_repo, state)
    with duckdb.connect(str(state)) as connection:  # as the controller leaves it at step 2
        connection.execute(
            """UPDATE canary_runs SET state = 'progressing',
                   runtime = '{"step": 1, "weights": {"stable": 50, "beta": 25, "canary": 25}}'
               WHERE route = 'checkout'"""
        )
    config_repo.write("route.yaml", route.replace("weight: 25", "weight: 30"))
    shown = run_cli("plan", "--repo", config_repo.path, "--state", state)
    assert shown.code == 0, shown.err
    assert (
        "    replaces run checkout#1, progressing at step 2 of 4: it is abandoned (superseded, "
        "not rolled back) and the route goes to this run's weights"
    ) in shown.out
    assert plan_json(config_repo, state)["canary_runs"][0]["replaces"] == (
        "checkout#1, progressing at step 2 of 4"
    )


@pytest.mark.parametrize("fmt", ["markdown", "github"])
def test_ci_formats(repo: ConfigRepo, tmp_path: Path, fmt: str) -> None:
    result = run_cli("plan", "--repo", repo.path, "--state", tmp_path / "s.duckdb", "--format", fmt)
    assert result.code == 0
    if fmt == "markdown":
        assert "**Plan:** 10 to add, 0 to change, 0 to destroy." in result.out
        assert "| DerivedCanary | 4 | 0 | 0 |" in result.out
    else:
        assert "::notice title=canary-reconciler plan::Plan: 10 to add" in result.out


HOSTILE_KEY = "x`\n\n## LGTM, safe to merge @security-team\n\n![x](https://evil.example/p.png)`"


def test_config_text_cannot_add_markdown_to_a_pull_request_comment(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """A field name or value with backticks and newlines stays inside its code span: no
    heading, mention, image or link of its own, whether the config is invalid or planned."""
    repo.write("canaries/hostile.yaml", canary_doc("hostile") + f"  {json.dumps(HOSTILE_KEY)}: 1\n")
    repo.commit("an invalid key")
    invalid = run_cli("plan", "--repo", repo.path, "--format", "markdown")
    assert invalid.code == 1
    labelled = f"name: hostile\n  labels: {{team: {json.dumps(HOSTILE_KEY)}}}"
    repo.write("canaries/hostile.yaml", canary_doc("hostile").replace("name: hostile", labelled))
    repo.commit("a hostile label value")
    planned = run_cli("plan", "--repo", repo.path, "--format", "markdown",
                      "--state", tmp_path / "state.duckdb")  # fmt: skip
    assert planned.code == 0, planned.err
    for comment in (invalid.out, planned.out):
        tokens = MarkdownIt("commonmark").parse(comment)
        headings = [t for t in tokens if t.type == "heading_open"]
        assert all(t.tag in ("h3", "h4") for t in headings), comment  # ours only
        inline = [c for t in tokens if t.children for c in t.children]
        assert not [c for c in inline if c.type in ("image", "link_open", "html_inline")]
        text = "".join(c.content for c in inline if c.type == "text")
        assert "@security-team" not in text and "LGTM" not in text  # only inside code
        assert "LGTM" in comment  # shown, as code


def test_a_markdown_plan_fits_a_pull_request_comment(repo: ConfigRepo, tmp_path: Path) -> None:
    # 600 new canaries made a comment of 505 KB; GitHub refuses one over 65,536 characters.
    for n in range(600):
        repo.write(f"canaries/bulk-{n}.yaml", canary_doc(f"bulk-{n}", selector="['*']"))
    result = run_cli(
        "plan", "--repo", repo.path, "--state", tmp_path / "s.duckdb", "--format", "markdown"
    )
    assert result.code == 0, result.err
    comment = result.out
    assert len(comment) <= COMMENT_LIMIT
    assert "**Plan:** 1810 to add, 0 to change, 0 to destroy." in comment
    assert comment.rstrip().endswith("```\n\n</details>")
    skipped = re.search(r"… ([\d,]+) more lines of the plan are not shown", comment)
    assert skipped, comment[-500:]
    assert "run `reconcile plan` for the whole plan" in comment
    # The lines shown and left out are the whole text plan.
    text = run_cli("plan", "--repo", repo.path, "--state", tmp_path / "s.duckdb").out
    shown = comment.split("```diff\n", 1)[1].split("\n… ", 1)[0].splitlines()
    assert len(shown) + int(skipped.group(1).replace(",", "")) == len(text.rstrip().splitlines())


def test_github_format_annotates_errors(repo: ConfigRepo, tmp_path: Path) -> None:
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "nowhere"))
    result = run_cli(
        "plan", "--repo", repo.path, "--state", tmp_path / "s.duckdb", "--format", "github"
    )
    assert result.code == 1
    assert f"::error file={repo.path}/agents/eu-2.yaml,line=6,col=3,title=Agent/eu-2::" in (
        result.out
    )


def test_a_file_name_that_is_not_utf8_is_shown_escaped_in_every_format(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """Not a TypeError from the JSON encoder: the name is written as its bytes, `caf\\xe9`."""
    document = canary_doc("cafe").replace(
        "schedule: '@every 30s'", "schedule: '@every 30s'\n  x: 1"
    )
    (repo.path / "canaries").mkdir(exist_ok=True)
    (repo.path / "canaries").joinpath(os.fsdecode(b"caf\xe9.yaml")).write_text(document)
    repo.commit("a Latin-1 file name")
    for ref in ((), ("--ref", "HEAD")):
        for fmt in ("text", "json", "markdown", "github"):
            result = run_cli("plan", "--repo", repo.path, *ref, "--format", fmt)
            assert result.code == 1 and "Traceback" not in result.err, (ref, fmt, result.err)
            assert "caf\\xe9.yaml" in result.out + result.err, (ref, fmt)
        shown = json.loads(run_cli("plan", "--repo", repo.path, *ref, "--format", "json").out)
        assert [d["file"] for d in shown["diagnostics"]] == ["canaries/caf\\xe9.yaml"]
