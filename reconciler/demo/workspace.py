"""The demo directory: a git copy of the config, the state file, logs, spools and the site."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.demo.errors import DemoError

AUTHOR = ("reconcile demo", "demo@canary-reconciler.invalid")


class WorkspaceError(DemoError):
    """The demo directory or its git repository cannot be set up."""


@dataclass(frozen=True)
class Workspace:
    """Where one demo keeps everything; kept after exit so the site can be browsed."""

    root: Path

    @property
    def config(self) -> Path:
        """The config repository `reconcile serve` follows (a git working tree)."""
        return self.root / "config"

    @property
    def state(self) -> Path:
        """The server's DuckDB state file."""
        return self.root / "state.duckdb"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.root / "logs"

    @property
    def agents(self) -> Path:
        """The agents' spool files."""
        return self.root / "agents"

    @property
    def site(self) -> Path:
        """The status site, which the server keeps up to date."""
        return self.root / "site"

    @property
    def gateway(self) -> Path:
        """The nginx prefix the server's gateway owns."""
        return self.root / "gateway"

    @property
    def backends(self) -> Path:
        """Files of the local backends (the TLS listeners' certificates)."""
        return self.root / "backends"


def create_workspace(directory: Path | None) -> Workspace:
    """A new temporary directory, or `directory` when it holds no earlier demo.

    Raises:
        WorkspaceError: `directory` already holds a demo's config repository.
    """
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="reconcile-demo-"))
    else:
        root = directory.resolve()
        if (root / "config").exists() or (root / "state.duckdb").exists():
            raise WorkspaceError(
                f"{root} already holds a demo; pass a new --dir (or remove {root})"
            )
        root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # nginx workers (nobody, when run as root) traverse it for temp files
    workspace = Workspace(root)
    for path in (workspace.logs, workspace.agents, workspace.backends):
        path.mkdir(exist_ok=True)
    return workspace


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`.

    Raises:
        WorkspaceError: git is missing or failed.
    """
    try:
        result = subprocess.run(
            ["git", *args], cwd=repo, check=True, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError as error:
        message = "git is not installed; the demo needs it (apt-get install git)"
        raise WorkspaceError(message) from error
    except subprocess.CalledProcessError as error:
        raise WorkspaceError(f"git {' '.join(args)} failed: {error.stderr.strip()}") from error
    return result.stdout.strip()


def copy_config(source: Path, workspace: Workspace) -> None:
    """Copy `source` to the workspace's config directory and commit it as it is.

    Raises:
        WorkspaceError: `source` is not a directory, or git fails.
    """
    if not source.is_dir():
        raise WorkspaceError(f"{source} is not a directory; pass --repo with the sample config")
    shutil.copytree(source, workspace.config, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    repo = workspace.config
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", AUTHOR[0])
    git(repo, "config", "user.email", AUTHOR[1])
    git(repo, "config", "commit.gpgsign", "false")
    commit(repo, f"{source.name}, as shipped")


def commit(repo: Path, message: str) -> str:
    """Commit everything in `repo`; the new commit's short SHA."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "--short", "HEAD")
