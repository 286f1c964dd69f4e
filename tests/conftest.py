"""Shared fixtures: real git config repositories in tmp_path and an in-process CLI runner."""

from __future__ import annotations

import io
import os
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# The gRPC tests run a server in this process and start agents with subprocess: with gRPC's
# fork support on, a child can die before exec with "epoll_wait error: Bad file descriptor"
# (grpc/grpc#43055). Off before anything imports gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from reconciler.cli.main import main
from tests.children import children_die_with_the_run  # noqa: F401 - a session-wide fixture

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REPO = ROOT / "sample-repo"


class ConfigRepo:
    """A git repository of YAML config files in a temporary directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Test Author")
        self.git("config", "user.email", "author@example.com")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.path, check=True, capture_output=True, text=True
        )
        return result.stdout.strip()

    def write(self, relative: str, text: str) -> Path:
        """Write a file (the text is dedented), creating directories as needed."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def remove(self, relative: str) -> None:
        (self.path / relative).unlink()

    def commit(self, message: str = "change") -> str:
        """Commit everything and return the new commit's SHA."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def config_repo(tmp_path: Path) -> ConfigRepo:
    """An empty git config repository."""
    return ConfigRepo(tmp_path / "config")


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    """The smallest fleet, committed: region eu, agent eu-1, canary web (a module that needs
    another defines a `repo` of its own)."""
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("initial")
    return config_repo


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str | Path) -> CliResult:
    """Run `reconcile` in-process and capture its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], out=out, err=err)
    return CliResult(code, out.getvalue(), err.getvalue())


REGION = """
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: {name}
spec:
  enabled: {enabled}
"""

AGENT = """
apiVersion: canary-reconciler/v1
kind: Agent
metadata:
  name: {name}
spec:
  region: {region}
  enabled: {enabled}
"""

CANARY = """
apiVersion: canary-reconciler/v1
kind: Canary
metadata:
  name: {name}
  namespace: {namespace}
spec:
  schedule: '@every 30s'
  agentSelector: {selector}
  http:
    - name: check
      url: {url}
"""


def region_doc(name: str, enabled: bool = True) -> str:
    return REGION.format(name=name, enabled=str(enabled).lower())


def agent_doc(name: str, region: str, enabled: bool = True) -> str:
    return AGENT.format(name=name, region=region, enabled=str(enabled).lower())


def canary_doc(
    name: str,
    selector: str = "['*']",
    url: str = "https://example.com/",
    namespace: str = "default",
) -> str:
    return CANARY.format(name=name, namespace=namespace, selector=selector, url=url)


@pytest.fixture
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio: the server's parts are asyncio code."""
    return "asyncio"
