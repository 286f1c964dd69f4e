"""The command line starts fast because it imports only what a command needs: `--version`
and `--help` load no server, database or HTTP library, and `validate` no database or server
(bench/startup.py times them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLE_REPO, ConfigRepo, agent_doc, region_doc

# What the server, the state file, the site and the HTTP clients bring in.
HEAVY = ("duckdb", "pyarrow", "fastapi", "starlette", "uvicorn", "httpx", "jinja2", "watchfiles")
# What loading a config needs, and nothing that prints a version does.
CONFIG = ("pydantic", "yaml", "celpy", "git")

PROBE = """
import sys
from reconciler.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("\\nIMPORTED " + ",".join(sorted({m.split(".")[0] for m in sys.modules})))
sys.exit(code)
"""


def imported_by(*args: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after `reconcile ARGS`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("IMPORTED ")]
    return set(line.removeprefix("IMPORTED ").split(","))


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["serve", "--help"]])
def test_version_and_help_import_no_server_database_or_config_library(args: list[str]) -> None:
    loaded = imported_by(*args)
    assert loaded & {*HEAVY, *CONFIG} == set()
    assert "reconciler" in loaded, "the probe ran the real command line"


def test_validate_imports_no_server_or_database() -> None:
    loaded = imported_by("validate", "--repo", str(SAMPLE_REPO), "-q")
    assert loaded & set(HEAVY) == set()
    assert {"pydantic", "yaml"} <= loaded, "the probe loaded the config"


def test_a_plan_against_another_ref_imports_no_database(config_repo: ConfigRepo) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.commit("base")
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.commit("an agent")
    args = ("plan", "--repo", str(config_repo.path), "--ref", "HEAD", "--base", "HEAD~1")
    loaded = imported_by(*args)
    assert loaded & set(HEAVY) == set()
    assert "git" in loaded, "the probe read both refs"
