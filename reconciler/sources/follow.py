"""Where `reconcile serve` reads its config: a local working tree, or a git repository it
mirrors and polls."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import watchfiles

from reconciler.core.documents import SourceFile
from reconciler.core.plan import Revision
from reconciler.sources.gitrepo import (
    GitLocation,
    GitSourceError,
    fetch,
    files_at,
    find_repository,
    mirror,
    worktree_revision,
)
from reconciler.sources.worktree import is_config_path, read_worktree

_URL = re.compile(r"^([a-z+]+://|[\w.-]+@[\w.-]+:)")


class ConfigSource(Protocol):
    """A config repository the server follows."""

    description: str

    def refresh(self) -> None:
        """Bring the local view up to date (a fetch for remote repositories)."""

    def snapshot(self) -> tuple[list[SourceFile], Revision]:
        """The files and revision to reconcile now."""

    @property
    def writable(self) -> GitLocation | None:
        """The working tree the operator API may commit to, or None when read-only."""


@dataclass
class WorktreeSource:
    """A local directory: what is on disk is what is applied; HEAD names the revision."""

    path: Path
    description: str = ""

    def __post_init__(self) -> None:
        self.description = f"working tree {self.path}"
        self._location = find_repository(self.path)

    def refresh(self) -> None:
        if self._location is None:  # `git init` may have happened since
            self._location = find_repository(self.path)

    def snapshot(self) -> tuple[list[SourceFile], Revision]:
        files = read_worktree(self.path)
        if self._location is None:
            return files, Revision(None, None, None, None)
        return files, worktree_revision(self._location)

    @property
    def writable(self) -> GitLocation | None:
        return self._location


@dataclass
class MirrorSource:
    """A remote (or bare) git repository, mirrored under the cache directory and fetched."""

    url: str
    cache: Path
    branch: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        self.description = f"git repository {self.url}" + (
            f" ({self.branch})" if self.branch else ""
        )
        self._repo = mirror(self.url, self.cache)
        self._location = GitLocation(self._repo, "")

    def refresh(self) -> None:
        fetch(self._repo)

    def snapshot(self) -> tuple[list[SourceFile], Revision]:
        ref = self.branch or "HEAD"
        return files_at(self._location, ref)

    @property
    def writable(self) -> GitLocation | None:
        return None


def _mirror_dir(cache_dir: Path, url: str) -> Path:
    """One mirror per repository URL, so changing --repo never follows the old remote."""
    return (
        cache_dir / f"mirror-{hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:12]}"
    )


def open_source(repo: str, cache_dir: Path, branch: str | None) -> ConfigSource:
    """A local working tree for a plain path; a mirror for a URL or a bare repository.

    Raises:
        GitSourceError: a URL or bare repository cannot be cloned.
        FileNotFoundError: a local path does not exist.
    """
    if _URL.match(repo):
        return MirrorSource(repo, _mirror_dir(cache_dir, repo), branch)
    path = Path(repo)
    if not path.exists():
        raise FileNotFoundError(f"config repository {path} does not exist")
    location = find_repository(path)
    if location is not None and location.repo.bare:
        url = str(path.resolve())
        return MirrorSource(url, _mirror_dir(cache_dir, url), branch)
    if branch:
        raise GitSourceError("--branch applies to git URLs and bare repositories only")
    return WorktreeSource(path)


def watch_filter(change: watchfiles.Change, path: str) -> bool:
    """Config files, and the git files that move when a commit or checkout happens."""
    normalised = path.replace(os.sep, "/")
    if "/.git/" in normalised:
        return normalised.endswith("/HEAD") or "/refs/heads/" in normalised
    if normalised.endswith("/.reconcileignore"):
        return True
    return is_config_path(normalised.rsplit("/", 1)[-1]) and "/." not in normalised


async def watch_worktree(source: WorktreeSource, trigger: Callable[[str], None]) -> None:
    """Call `trigger` whenever a config file changes on disk or a commit moves HEAD."""
    paths = [source.path]
    location = find_repository(source.path)
    if location is not None and location.repo.git_dir:
        paths.append(Path(location.repo.git_dir))
    async for _ in watchfiles.awatch(*paths, watch_filter=watch_filter, debounce=200):
        trigger("file change")
