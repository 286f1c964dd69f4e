"""The operator API's writes against the server (in process): every edit is a git commit."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.core import yaml_edit as configedit
from tests.agentproc import free_port
from tests.conftest import ConfigRepo, canary_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import ADMIN_TOKEN, wait_for

AUTHOR = "canary-reconciler operator API <operator@canary-reconciler.invalid>"

REGIONS = """\
# yaml-language-server: $schema=../schemas/jsonschema/region.json
# Regions of the test fleet.
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: eu
spec:
  displayName: Europe  # shown on the site
  location: Frankfurt, DE
---
# The US region.
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: us
spec:
  location: 'Ashburn, VA'
---
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: spare
"""

AGENTS = """\
# Agents; tokens are never kept in git.
apiVersion: canary-reconciler/v1
kind: Agent
metadata:
  name: eu-1
spec:
  region: eu
  labels: {provider: hetzner}  # where it runs
---
# The US probe.
apiVersion: canary-reconciler/v1
kind: Agent
metadata:
  name: us-1
spec:
  region: us
"""

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/operator/agents", None),
    ("GET", "/operator/regions", None),
    ("POST", "/operator/agents/eu-1/token", None),
    ("POST", "/operator/regions", {"name": "ap"}),
    ("PATCH", "/operator/regions/eu", {"enabled": False}),
    ("DELETE", "/operator/regions/spare", None),
    ("POST", "/operator/agents", {"name": "eu-2", "region": "eu"}),
    ("PATCH", "/operator/agents/eu-1", {"enabled": False}),
    ("DELETE", "/operator/agents/us-1", None),
]


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions/regions.yaml", REGIONS)
    config_repo.write("agents/agents.yaml", AGENTS)
    config_repo.write("canaries/web.yaml", canary_doc("web", selector="['*']"))
    config_repo.write("schemas/jsonschema/agent.json", "{}\n")  # no region.json on purpose
    config_repo.commit("initial")
    return config_repo


@pytest.fixture
def server(repo: ConfigRepo, tmp_path: Path) -> Iterator[InProcessServer]:
    with running_in_process(repo.path, tmp_path / "state.duckdb") as process:
        process.wait_ready()
        yield process


def head(repo: ConfigRepo) -> str:
    return repo.git("rev-parse", "HEAD")


def last_commit(repo: ConfigRepo) -> tuple[str, str]:
    """The author and subject of HEAD."""
    author, subject = repo.git("log", "-1", "--format=%an <%ae>%n%s").split("\n")
    return author, subject


def at_head(repo: ConfigRepo, path: str) -> str:
    return repo.git("show", f"HEAD:{path}") + "\n"


def commit_count(repo: ConfigRepo) -> int:
    return int(repo.git("rev-list", "--count", "HEAD"))


def pull(server: InProcessServer, token: str) -> httpx.Response:
    return server.client.get("/api/agent/targets", headers={"Authorization": f"Bearer {token}"})


def agents_of(server: InProcessServer) -> dict[str, dict[str, Any]]:
    rows = server.admin("GET", "/operator/agents").json()["agents"]
    return {row["name"]: row for row in rows}


def regions_of(server: InProcessServer) -> dict[str, dict[str, Any]]:
    rows = server.admin("GET", "/operator/regions").json()["regions"]
    return {row["name"]: row for row in rows}


def assert_clean(repo: ConfigRepo) -> None:
    assert repo.git("status", "--porcelain") == ""


# -- access ----------------------------------------------------------------------------------


def test_every_route_is_404_when_the_admin_token_is_unset(repo: ConfigRepo, tmp_path: Path) -> None:
    env = {"RECONCILER_ADMIN_TOKEN": ""}
    before = head(repo)
    with running_in_process(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        for method, path, body in ROUTES:
            response = server.admin(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    assert head(repo) == before


def test_every_route_is_401_with_a_wrong_token(server: InProcessServer, repo: ConfigRepo) -> None:
    before = head(repo)
    for method, path, body in ROUTES:
        for headers in ({"Authorization": "Bearer not-the-admin-token"}, {}):
            response = server.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
    assert head(repo) == before
    assert_clean(repo)


# -- agents ----------------------------------------------------------------------------------


def test_create_agent_commits_and_returns_a_token_that_pulls(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    before = commit_count(repo)
    response = server.admin(
        "POST", "/operator/agents", json={"name": "eu-2", "region": "eu", "labels": {"on": "yes"}}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["revision"] == head(repo)
    assert commit_count(repo) == before + 1
    assert last_commit(repo) == (AUTHOR, "operator: create agent eu-2 in eu")
    assert body["files"] == ["agents/eu-2.yaml"]
    assert body["agent"]["name"] == "eu-2"
    assert body["agent"]["region"] == "eu"
    assert body["agent"]["has_token"] is True
    assert at_head(repo, "agents/eu-2.yaml") == textwrap.dedent("""\
        # yaml-language-server: $schema=../schemas/jsonschema/agent.json
        apiVersion: canary-reconciler/v1
        kind: Agent
        metadata:
          name: eu-2
        spec:
          region: eu
          labels: {'on': 'yes'}
        """)
    assert_clean(repo)

    assert agents_of(server)["eu-2"]["region"] == "eu"
    assert "eu-2" in regions_of(server)["eu"]["agents"]
    pulled = pull(server, body["token"])
    assert pulled.status_code == 200, pulled.text
    assert pulled.json()["agent"] == "eu-2"
    assert [c["id"] for c in pulled.json()["canaries"]] == ["default/web@eu-2"]


def test_duplicate_unknown_and_invalid_bodies_change_nothing(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    before = head(repo)
    duplicate = server.admin("POST", "/operator/agents", json={"name": "eu-1", "region": "us"})
    assert duplicate.status_code == 409
    assert "agent eu-1 already exists" in duplicate.json()["error"]
    assert server.admin("POST", "/operator/regions", json={"name": "us"}).status_code == 409

    assert (
        server.admin("PATCH", "/operator/agents/nope", json={"enabled": False}).status_code == 404
    )
    assert server.admin("DELETE", "/operator/agents/nope").status_code == 404
    assert (
        server.admin("PATCH", "/operator/regions/nope", json={"enabled": True}).status_code == 404
    )
    assert server.admin("DELETE", "/operator/regions/nope").status_code == 404

    for path, body in [
        ("/operator/agents", {"name": "eu-2"}),  # no region
        ("/operator/agents", {"name": "Not A Slug", "region": "eu"}),
        ("/operator/agents", {"name": "eu-2", "region": "eu", "enabled": "no"}),
        ("/operator/agents", {"name": "eu-2", "region": "eu", "labels": {"a": 1}}),
        ("/operator/agents", {"name": "eu-2", "region": "eu", "colour": "red"}),
        ("/operator/agents", {"name": "eu-2", "region": "nowhere"}),
        ("/operator/regions", ["ap"]),
        ("/operator/regions", {"name": None}),
    ]:
        response = server.admin("POST", path, json=body)
        assert response.status_code == 422, (body, response.text)
    missing = server.admin("POST", "/operator/agents", json={"name": "eu-2"}).json()
    assert "region" in missing["expected"]
    assert any(e.startswith("region:") for e in missing["errors"])
    not_json = server.admin("POST", "/operator/regions", content=b"{name")
    assert not_json.status_code == 422
    assert server.admin("PATCH", "/operator/agents/eu-1", json={}).status_code == 422
    assert server.admin("PATCH", "/operator/agents/eu-1", json={"region": None}).status_code == 422

    assert head(repo) == before
    assert_clean(repo)


def test_rename_move_and_disable_an_agent(server: InProcessServer, repo: ConfigRepo) -> None:
    token = server.token("eu-1")
    assert pull(server, token).status_code == 200

    disabled = server.admin("PATCH", "/operator/agents/eu-1", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["agent"]["enabled"] is False
    assert last_commit(repo) == (AUTHOR, "operator: disable agent eu-1")
    assert pull(server, token).status_code == 403

    moved = server.admin("PATCH", "/operator/agents/eu-1", json={"region": "us", "enabled": True})
    assert moved.status_code == 200, moved.text
    assert moved.json()["agent"]["region"] == "us"
    assert pull(server, token).json()["region"] == "us"

    renamed = server.admin("PATCH", "/operator/agents/eu-1", json={"name": "us-2"})
    assert renamed.status_code == 200, renamed.text
    assert last_commit(repo) == (AUTHOR, "operator: rename agent eu-1 to us-2")
    assert set(agents_of(server)) == {"us-1", "us-2"}
    assert pull(server, token).status_code == 401, "a token names its agent"
    assert pull(server, renamed.json()["token"]).json()["agent"] == "us-2"

    assert at_head(repo, "agents/agents.yaml") == AGENTS.replace("eu-1", "us-2").replace(
        "region: eu\n", "region: us\n"
    ).replace("# where it runs\n", "# where it runs\n  enabled: true\n")
    assert_clean(repo)


def test_labels_are_replaced_in_place(server: InProcessServer, repo: ConfigRepo) -> None:
    response = server.admin(
        "PATCH", "/operator/agents/eu-1", json={"labels": {"provider": "aws", "tier": "2"}}
    )
    assert response.status_code == 200, response.text
    text = at_head(repo, "agents/agents.yaml")
    assert "  labels: {provider: aws, tier: '2'} # where it runs\n" in text
    cleared = server.admin("PATCH", "/operator/agents/eu-1", json={"labels": None})
    assert cleared.status_code == 200, cleared.text
    assert "labels" not in at_head(repo, "agents/agents.yaml").split("---")[0]
    assert agents_of(server)["eu-1"]["region"] == "eu"


def test_delete_agent_revokes_its_token(server: InProcessServer, repo: ConfigRepo) -> None:
    token = server.token("us-1")
    response = server.admin("DELETE", "/operator/agents/us-1")
    assert response.status_code == 200, response.text
    assert response.json()["token_revoked"] is True
    assert last_commit(repo) == (AUTHOR, "operator: delete agent us-1")
    assert at_head(repo, "agents/agents.yaml") == AGENTS.split("---\n")[0]
    assert pull(server, token).status_code == 401

    # Put back by a plain commit: the old token stays revoked.
    repo.write("agents/agents.yaml", AGENTS)
    repo.commit("restore us-1")
    server.webhook()
    wait_for(lambda: "us-1" in agents_of(server), 5, "us-1 back")
    assert pull(server, token).status_code == 401


def test_a_no_op_patch_commits_nothing(server: InProcessServer, repo: ConfigRepo) -> None:
    before = head(repo)
    response = server.admin(
        "PATCH", "/operator/agents/eu-1", json={"region": "eu", "enabled": True}
    )
    assert response.status_code == 200, response.text
    assert response.json()["changed"] is False
    assert response.json()["revision"] == before
    assert head(repo) == before


# -- regions ---------------------------------------------------------------------------------


def test_create_region_without_a_reachable_schema(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    response = server.admin(
        "POST",
        "/operator/regions",
        json={"name": "ap", "displayName": "Asia Pacific", "location": "Mumbai, IN"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["region"] == {
        "name": "ap",
        "displayName": "Asia Pacific",
        "location": "Mumbai, IN",
        "enabled": True,
        "agents": [],
        "results_last_hour": 0,
    }
    assert last_commit(repo) == (AUTHOR, "operator: create region ap")
    assert at_head(repo, "regions/ap.yaml") == textwrap.dedent("""\
        apiVersion: canary-reconciler/v1
        kind: Region
        metadata:
          name: ap
        spec:
          displayName: Asia Pacific
          location: Mumbai, IN
        """)
    agent = server.admin("POST", "/operator/agents", json={"name": "ap-1", "region": "ap"})
    assert agent.status_code == 201, agent.text


def test_rename_a_region_moves_its_agents_in_one_commit(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    token = server.token("eu-1")
    before = commit_count(repo)
    response = server.admin(
        "PATCH",
        "/operator/regions/eu",
        json={"name": "europe", "location": "Dublin, IE", "displayName": None},
    )
    assert response.status_code == 200, response.text
    assert response.json()["region"]["name"] == "europe"
    assert response.json()["region"]["location"] == "Dublin, IE"
    assert response.json()["region"]["displayName"] is None
    assert response.json()["region"]["agents"] == ["eu-1"]
    assert commit_count(repo) == before + 1
    assert last_commit(repo) == (
        AUTHOR,
        "operator: rename region eu to europe, remove displayName of region eu, "
        "relocate region eu to 'Dublin, IE', move agent eu-1 to europe",
    )
    assert sorted(response.json()["files"]) == ["agents/agents.yaml", "regions/regions.yaml"]

    # Comments, quoting and the other documents of both files are untouched.
    assert at_head(repo, "regions/regions.yaml") == REGIONS.replace(
        "  name: eu\nspec:\n  displayName: Europe  # shown on the site\n"
        "  location: Frankfurt, DE\n",
        "  name: europe\nspec:\n  location: Dublin, IE\n",
    )
    assert at_head(repo, "agents/agents.yaml") == AGENTS.replace("region: eu\n", "region: europe\n")
    assert set(regions_of(server)) == {"europe", "us", "spare"}
    assert pull(server, token).json()["region"] == "europe"
    assert_clean(repo)


def test_disable_a_region_stops_its_agents(server: InProcessServer, repo: ConfigRepo) -> None:
    token = server.token("eu-1")
    response = server.admin("PATCH", "/operator/regions/eu", json={"enabled": False})
    assert response.status_code == 200, response.text
    assert response.json()["region"]["enabled"] is False
    assert last_commit(repo) == (AUTHOR, "operator: disable region eu")
    assert pull(server, token).status_code == 403
    assert "  location: Frankfurt, DE\n  enabled: false\n---\n# The US region." in at_head(
        repo, "regions/regions.yaml"
    )
    assert server.admin("PATCH", "/operator/regions/eu", json={"enabled": True}).status_code == 200
    assert pull(server, token).status_code == 200


def test_delete_a_region_in_use_is_409(server: InProcessServer, repo: ConfigRepo) -> None:
    before = head(repo)
    response = server.admin("DELETE", "/operator/regions/eu")
    assert response.status_code == 409, response.text
    assert response.json()["agents"] == ["eu-1"]
    assert response.json()["canaries"] == ["default/web@eu-1"]
    assert head(repo) == before

    assert server.admin("DELETE", "/operator/agents/eu-1").status_code == 200
    deleted = server.admin("DELETE", "/operator/regions/eu")
    assert deleted.status_code == 200, deleted.text
    assert last_commit(repo) == (AUTHOR, "operator: delete region eu")
    assert set(regions_of(server)) == {"us", "spare"}
    # The file's header comments stay when its first document goes.
    assert at_head(repo, "regions/regions.yaml") == (
        "# yaml-language-server: $schema=../schemas/jsonschema/region.json\n"
        "# Regions of the test fleet.\n" + REGIONS.split("---\n", 1)[1]
    )
    assert server.admin("DELETE", "/operator/regions/spare").status_code == 200
    assert_clean(repo)


def test_the_control_planes_own_region_is_not_renamed(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    assert server.admin("POST", "/operator/regions", json={"name": "default"}).status_code == 201
    before = head(repo)
    response = server.admin("PATCH", "/operator/regions/default", json={"name": "frankfurt"})
    assert response.status_code == 409, response.text
    assert "control plane's own region" in response.json()["error"]
    assert head(repo) == before
    located = server.admin("PATCH", "/operator/regions/default", json={"location": "Frankfurt"})
    assert located.status_code == 200, located.text


def test_a_config_in_a_subdirectory(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "monorepo")
    repo.write("config/regions.yaml", REGIONS.replace("../schemas", "../../schemas"))
    repo.write("config/agents.yaml", AGENTS)
    repo.write("schemas/jsonschema/region.json", "{}\n")
    repo.write("README.md", "not config\n")
    repo.commit("initial")
    with running_in_process(repo.path / "config", tmp_path / "state.duckdb") as server:
        server.wait_ready()
        response = server.admin("POST", "/operator/regions", json={"name": "ap"})
        assert response.status_code == 201, response.text
        assert at_head(repo, "config/regions/ap.yaml").startswith(
            "# yaml-language-server: $schema=../../schemas/jsonschema/region.json\n"
        )
        renamed = server.admin("PATCH", "/operator/regions/us", json={"name": "na"})
        assert renamed.status_code == 200, renamed.text
        assert "  region: na\n" in at_head(repo, "config/agents.yaml")
        assert set(regions_of(server)) == {"eu", "na", "spare", "ap"}
    assert_clean(repo)


# -- refusals --------------------------------------------------------------------------------


def test_an_edit_that_fails_validation_is_422_and_not_committed(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    before = head(repo)
    response = server.admin("PATCH", "/operator/agents/eu-1", json={"name": "local"})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any("agents/agents.yaml:5:" in e and "reserved" in e for e in errors), errors
    created = server.admin("POST", "/operator/agents", json={"name": "local", "region": "eu"})
    assert created.status_code == 422
    assert head(repo) == before
    assert_clean(repo)
    assert not (repo.path / "agents/local.yaml").exists()
    assert set(agents_of(server)) == {"eu-1", "us-1"}


def test_uncommitted_changes_in_a_touched_file_are_409(
    server: InProcessServer, repo: ConfigRepo
) -> None:
    before = head(repo)
    edited = AGENTS.replace("# The US probe.", "# The US probe, edited by hand.")
    (repo.path / "agents/agents.yaml").write_text(edited)
    response = server.admin("PATCH", "/operator/agents/us-1", json={"enabled": False})
    assert response.status_code == 409, response.text
    assert response.json()["files"] == ["agents/agents.yaml"]
    assert (repo.path / "agents/agents.yaml").read_text() == edited
    assert head(repo) == before
    # Files it does not touch do not matter.
    assert server.admin("PATCH", "/operator/regions/us", json={"enabled": False}).status_code == 200


def test_a_read_only_source_is_409(repo: ConfigRepo, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    with running_in_process(bare, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        assert set(agents_of(server)) == {"eu-1", "us-1"}
        for method, path, body in ROUTES[3:]:
            response = server.admin(method, path, json=body)
            assert response.status_code == 409, (method, path, response.text)
            assert str(bare.resolve()) in response.json()["error"]
            assert response.json()["repository"].startswith("git repository")


def test_concurrent_writes_are_serialised(server: InProcessServer, repo: ConfigRepo) -> None:
    before = commit_count(repo)
    names = [f"eu-{n}" for n in range(2, 8)]

    def create(name: str) -> int:
        with server.new_client() as client:
            response = client.post(
                "/operator/agents",
                json={"name": name, "region": "eu"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            return response.status_code

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(create, names)) == [201] * len(names)
    assert commit_count(repo) == before + len(names)
    assert set(agents_of(server)) >= set(names)
    assert_clean(repo)


# -- the YAML editing itself -----------------------------------------------------------------


def test_split_documents_gives_back_the_text() -> None:
    text = REGIONS + "...\n--- # trailing\nkind: X\n"
    segments = configedit.split_documents(text)
    assert "".join(s.text for s in segments) == text
    assert [s.marker for s in segments] == ["", "---\n", "---\n", "", "--- # trailing\n"]


def test_removing_a_field_keeps_the_comments_about_the_others() -> None:
    body = textwrap.dedent("""\
        kind: Region
        spec:
          displayName: X  # about X
          # about the location
          location: L

          # about enabled
          enabled: true
        # after the document
        """)

    def drop(key: str) -> str:
        return configedit.edit_document(body, lambda d: configedit.apply_fields(d, {key: None}))

    assert drop("displayName") == body.replace("  displayName: X  # about X\n", "")
    assert drop("location") == body.replace("  # about the location\n  location: L\n", "")
    assert drop("enabled") == body.replace("\n  # about enabled\n  enabled: true\n", "")


def test_values_yaml_1_1_would_misread_are_quoted() -> None:
    for value in ("yes", "off", "2024-01-01", "1.5", "null", "~"):
        assert configedit.safe_scalar(value) == value
        assert type(configedit.safe_scalar(value)) is not str
    assert type(configedit.safe_scalar("eu-west")) is str


def test_a_region_counts_the_results_of_the_servers_own_checks(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """`local` canaries run on the server and report in its region (`--local-region`): no
    Agent is named `local`, yet the region's count of the last hour holds their rows."""
    unreachable = f"http://127.0.0.1:{free_port()}/"  # refused at once: a failed run, stored
    repo.write("canaries/local.yaml", canary_doc("own", selector="['local']", url=unreachable))
    repo.commit("a local canary")
    env = {"RECONCILER_LOCAL_REGION": "eu"}
    with running_in_process(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        wait_for(
            lambda: regions_of(server)["eu"]["results_last_hour"] > 0,
            timeout=45,  # the first run comes within the schedule period (30s)
            what="the local canary's first result counted in region eu",
        )
        assert agents_of(server)["eu-1"]["results_last_hour"] == 0
        assert regions_of(server)["us"]["results_last_hour"] == 0
