"""`.reconcileignore`: a canary-checker directory with Kubernetes manifests beside its Canaries
can be pointed at as it is, from the working tree and from git refs alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import watchfiles

from reconciler.core.ignore import IgnoreRules
from reconciler.sources.follow import watch_filter
from tests.conftest import ConfigRepo, canary_doc, region_doc, run_cli
from tests.server import running_server, wait_for

CANARY = """
apiVersion: canaries.flanksource.com/v1
kind: Canary
metadata:
  name: {name}
spec:
  schedule: '@every 1m'
  http:
    - name: home
      url: https://example.com/
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: canary-checker
spec:
  replicas: 1
"""

KUSTOMIZATION = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
  - canaries/
"""

IGNORE = """
# Kubernetes manifests that sit beside the Canaries
kustomization.yaml
k8s/
"""


@pytest.fixture
def checker_repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("kustomization.yaml", KUSTOMIZATION)
    config_repo.write("k8s/deployment.yaml", DEPLOYMENT)
    config_repo.write("k8s/overlays/prod/kustomization.yaml", KUSTOMIZATION)
    config_repo.write("canaries/web.yaml", CANARY.format(name="web"))
    config_repo.write("canaries/api.yaml", CANARY.format(name="api"))
    config_repo.commit("a canary-checker directory as it is")
    return config_repo


def test_without_an_ignore_file_foreign_documents_say_how_to_leave_them_out(
    checker_repo: ConfigRepo,
) -> None:
    result = run_cli("validate", "--repo", checker_repo.path)
    assert result.code == 1
    errors = [line for line in result.out.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3
    assert errors[0] == (
        "Error: k8s/deployment.yaml:1:1: Deployment/canary-checker: apiVersion: unknown "
        "apiVersion 'apps/v1' (kind Deployment; expected one of: canaries.flanksource.com/v1, "
        "canary-reconciler/v1); if this file is not reconciler config (a Kubernetes manifest, "
        "a kustomization.yaml), leave it out with a .reconcileignore (gitignore syntax) at the "
        "repository root"
    )


def test_validate_and_plan_honour_the_ignore_file_in_the_tree_and_at_a_ref(
    checker_repo: ConfigRepo,
) -> None:
    checker_repo.write(".reconcileignore", IGNORE)
    checker_repo.commit("ignore the manifests")
    validated = run_cli("validate", "--repo", checker_repo.path)
    assert validated.code == 0, validated.out + validated.err
    assert (
        "Notice: .reconcileignore:1:1: left out 3 file(s): k8s/deployment.yaml, "
        "k8s/overlays/prod/kustomization.yaml, kustomization.yaml"
    ) in validated.out
    at_ref = run_cli("validate", "--repo", checker_repo.path, "--ref", "HEAD")
    assert at_ref.code == 0, at_ref.out
    before = run_cli("validate", "--repo", checker_repo.path, "--ref", "HEAD~1")
    assert before.code == 1, "the commit before had no ignore file"
    plan = run_cli("plan", "--repo", checker_repo.path, "--base", "HEAD~1", "--format", "json")
    assert plan.code == 1, "the base ref does not load"
    state = checker_repo.path.parent / "state.duckdb"
    plan = run_cli("plan", "--repo", checker_repo.path, "--ref", "HEAD", "--state", state,
                   "--format", "json")  # fmt: skip
    assert plan.code == 0, plan.err
    addresses = {c["address"] for c in json.loads(plan.out)["changes"]}
    assert addresses == {
        "canary.default/web",
        "canary.default/api",
        "derived_canary.default/web@local",
        "derived_canary.default/api@local",
    }
    applied = run_cli("apply", "--repo", checker_repo.path, "--state", state, "--auto-approve")
    assert applied.code == 0, applied.err


def test_an_ignore_file_that_leaves_out_everything_is_refused(config_repo: ConfigRepo) -> None:
    config_repo.write("canaries/web.yaml", CANARY.format(name="web"))
    config_repo.write(".reconcileignore", "*.yaml\n")
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert (
        "Error: .reconcileignore:1:1: no config file is left to load (1 left out): refusing to "
        "load an empty configuration (it would delete everything)"
    ) in result.out


def test_an_ignore_file_alone_is_not_an_empty_configuration(config_repo: ConfigRepo) -> None:
    config_repo.write(".reconcileignore", "k8s/\n")
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "no config file is left to load (0 left out): refusing to load an empty" in result.out


def test_a_document_without_api_version_says_so(config_repo: ConfigRepo) -> None:
    config_repo.write("values.yaml", "image:\n  tag: v1\n")
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "None" not in result.out
    assert (
        "Error: values.yaml:1:1: apiVersion: apiVersion is missing (expected one of: "
        "canaries.flanksource.com/v1, canary-reconciler/v1, or a gateway config with top-level "
        "routes:); if this file is not reconciler config, leave it out with a .reconcileignore "
        "(gitignore syntax) at the repository root"
    ) in result.out


@pytest.mark.parametrize(
    ("patterns", "ignored", "kept"),
    [
        # unanchored name: any depth
        ("kustomization.yaml", ["kustomization.yaml", "a/b/kustomization.yaml"], ["k.yaml"]),
        # a leading or inner slash anchors at the root
        (
            "/top.yaml\nk8s/base.yaml",
            ["top.yaml", "k8s/base.yaml"],
            ["a/top.yaml", "x/k8s/base.yaml"],
        ),
        # a trailing slash matches directories only, at any depth
        ("deploy/", ["deploy/a.yaml", "x/deploy/b.yaml"], ["deploy.yaml"]),
        # globs stay within one path component; ** crosses directories
        ("k8s/*.yaml", ["k8s/a.yaml"], ["k8s/sub/a.yaml"]),
        ("a/**/b.yaml", ["a/b.yaml", "a/x/y/b.yaml"], ["b.yaml", "c/a/b.yaml"]),
        ("**/manifests/**", ["manifests/a.yaml", "x/manifests/y/z.yaml"], ["manifest.yaml"]),
        ("deploy-?.yaml\n[ab].yaml", ["deploy-1.yaml", "a.yaml"], ["deploy-12.yaml", "c.yaml"]),
        # negation re-includes, later patterns win
        ("*.yaml\n!canaries/*.yaml", ["k.yaml"], ["canaries/web.yaml"]),
        ("k8s/*\n!k8s/canary.yaml", ["k8s/a.yaml"], ["k8s/canary.yaml"]),
        # ... but never inside a directory that is itself left out (as git does)
        ("k8s/\n!k8s/canary.yaml", ["k8s/canary.yaml", "k8s/a.yaml"], []),
        # comments, blank lines and an escaped leading '#'
        ("# not a pattern\n\n\\#weird.yaml", ["#weird.yaml"], ["not", "# not a pattern"]),
    ],
)
def test_gitignore_matching(patterns: str, ignored: list[str], kept: list[str]) -> None:
    rules = IgnoreRules.parse(patterns)
    assert [p for p in ignored if not rules.ignores(p)] == []
    assert [p for p in kept if rules.ignores(p)] == []


def test_serve_reloads_when_the_ignore_file_changes() -> None:
    assert watch_filter(watchfiles.Change.modified, "/srv/config/.reconcileignore")
    assert not watch_filter(watchfiles.Change.modified, "/srv/config/.gitignore")


@pytest.mark.slow
def test_serve_honours_the_ignore_file_and_reloads_when_it_changes(
    checker_repo: ConfigRepo, tmp_path: Path
) -> None:
    checker_repo.write(".reconcileignore", IGNORE)
    checker_repo.commit("ignore the manifests")
    with running_server(checker_repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        first = server.client.get("/api/v1/status").json()["last_attempt"]
        assert first["applied"] and first["errors"] == [], first

        checker_repo.write(".reconcileignore", "# nothing left out any more\n")

        def reloaded_with_errors() -> bool:
            attempt = server.client.get("/api/v1/status").json()["last_attempt"]
            return any("unknown apiVersion 'apps/v1'" in e for e in attempt["errors"])

        wait_for(reloaded_with_errors, 20, "a reload after the ignore file changed")


def test_config_under_a_hidden_path_is_named_as_left_out(config_repo: ConfigRepo) -> None:
    """`git mv canaries .canaries` plans the canaries' deletion: hidden paths are not loaded,
    by design, but a notice names the config files left out, in the tree and at a ref.
    Other tools' YAML under hidden paths (a CI workflow) is not config and not named."""
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write(".canaries/web.yaml", canary_doc("web"))
    config_repo.write(".draft.yaml", canary_doc("draft"))
    config_repo.write(".github/workflows/ci.yml", "on: push\njobs: {}\n")
    config_repo.commit("canaries moved under a hidden directory")
    notice = (
        "Notice: .canaries/web.yaml:1:1: left out 2 config file(s) with a hidden path (a "
        "directory or name starting with '.'): .canaries/web.yaml, .draft.yaml; move them out "
        "of it to load them"
    )
    for ref in ((), ("--ref", "HEAD")):
        result = run_cli("validate", "--repo", config_repo.path, *ref)
        assert result.code == 0, result.out
        assert notice in result.out + result.err
        assert "ci.yml" not in result.out + result.err


def test_only_hidden_config_is_an_empty_configuration(config_repo: ConfigRepo) -> None:
    config_repo.write(".canaries/web.yaml", canary_doc("web"))
    config_repo.commit("everything hidden")
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 1
    assert "(1 under hidden paths, never loaded): refusing to plan an empty" in result.err


def test_a_directory_where_the_ignore_file_belongs_is_an_error(config_repo: ConfigRepo) -> None:
    """Its rules would not be applied without a word: files meant to be left out would load."""
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write(".reconcileignore/rules", "k8s/\n")
    config_repo.commit("the ignore rules in a directory by mistake")
    for ref in ((), ("--ref", "HEAD")):
        result = run_cli("validate", "--repo", config_repo.path, *ref)
        assert result.code == 1
        assert (
            "Error: .reconcileignore:1:1: is a directory, not a regular file; its rules are "
            "not applied"
        ) in result.out
