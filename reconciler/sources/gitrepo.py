"""Everything that talks to git: reading a ref's files and describing revisions."""

from __future__ import annotations

import os
import posixpath
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import git

from reconciler.core.documents import SourceFile, UnreadableFile, shown_path
from reconciler.core.ignore import IGNORE_FILE
from reconciler.core.plan import Revision
from reconciler.sources.worktree import (
    hidden_file,
    ignore_directory,
    is_hidden_yaml,
    is_source_path,
)
from schemas.limits import MAX_FILE_BYTES, limit_hint

_SYMLINK_MODE = 0o120000
_REGULAR_MODES = (0o100644, 0o100755, 0o100664)
# As the kernel does (MAXSYMLINKS): a chain of links longer than this is taken for a loop.
_MAX_LINK_HOPS = 40
_MAX_LINK_TARGET_BYTES = 4096


class GitSourceError(Exception):
    """A git repository or ref could not be read."""


@dataclass(frozen=True)
class GitLocation:
    """A config directory inside a git repository: the repo and the subdirectory."""

    repo: git.Repo
    subdirectory: str  # '' for the repository root, else a posix path
    # GitPython's Repo is not thread-safe: its persistent `git cat-file --batch` processes
    # and its environment are shared, and two threads using them at once can hang on the
    # pipe. Every use of `repo` here holds this lock (the operator API commits on one
    # thread while the watcher reads on another).
    lock: threading.RLock = field(default_factory=threading.RLock, compare=False, repr=False)


def find_repository(path: Path) -> GitLocation | None:
    """The git repository containing `path`, or None when it is in none."""
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.bare:
        return GitLocation(repo, "")
    top = Path(repo.working_tree_dir or path).resolve()
    relative = Path(path).resolve().relative_to(top).as_posix()
    return GitLocation(repo, "" if relative == "." else relative)


def _revision(commit: git.Commit, ref: str | None, dirty: bool = False) -> Revision:
    return Revision(
        sha=commit.hexsha,
        ref=ref,
        author=f"{commit.author.name} <{commit.author.email}>",
        committed_at=commit.committed_datetime.isoformat(),
        message=str(commit.message).strip().splitlines()[0] if commit.message else "",
        dirty=dirty,
    )


# What GitHub gives as the commit before a push that made a branch (`github.event.before`).
_NO_COMMIT = "0" * 40


def _resolve(location: GitLocation, ref: str) -> git.Commit:
    if ref == _NO_COMMIT:
        raise GitSourceError(
            f"unknown git ref {ref!r}: the all-zero SHA names no commit (CI gives it as the "
            "commit before a new branch's first push; plan against the state, or the "
            "default branch, instead)"
        )
    try:
        commit = location.repo.commit(ref)
        _ = commit.tree  # a full SHA is only looked up when the commit is read
    except (git.BadName, ValueError, git.GitCommandError) as error:
        raise GitSourceError(f"unknown git ref {ref!r}: {error}") from error
    return commit


def _blob_reader(blob: git.Blob, lock: threading.RLock) -> Callable[[], bytes]:
    def read() -> bytes:
        if blob.size > MAX_FILE_BYTES:
            raise UnreadableFile(
                f"the file is larger than {MAX_FILE_BYTES} bytes; "
                + limit_hint("file size", f"{MAX_FILE_BYTES} bytes")
            )
        with lock:
            return bytes(blob.data_stream.read())

    return read


def _refusal(message: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise UnreadableFile(message)

    return read


def _link_target(root: git.Tree, link: git.Blob, inside: str) -> git.Blob:
    """The regular file a symlink blob of the commit leads to, inside directory `inside`.

    Raises:
        UnreadableFile: a link loop, a dangling link, a link out of `inside`, or one to
            something other than a regular file.
    """
    current: git.Blob = link
    for _ in range(_MAX_LINK_HOPS):
        if current.mode != _SYMLINK_MODE:
            if current.mode not in _REGULAR_MODES:
                raise UnreadableFile("is a symbolic link to something other than a regular file")
            return current
        if current.size > _MAX_LINK_TARGET_BYTES:
            raise UnreadableFile("is a symbolic link with an over-long target")
        target = bytes(current.data_stream.read()).decode("utf-8", errors="replace")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(current.path), target))
        prefix = f"{inside}/" if inside else ""
        if posixpath.isabs(target) or joined.startswith("../") or joined == "..":
            raise UnreadableFile(_OUTSIDE)
        if not (joined + "/").startswith(prefix):
            raise UnreadableFile(_OUTSIDE)
        try:
            found = root / joined
        except KeyError:
            raise UnreadableFile(
                "is a symbolic link to nothing (its target does not exist in the commit)"
            ) from None
        if not isinstance(found, git.Blob):
            raise UnreadableFile("is a symbolic link to a directory, not a regular file")
        current = found
    raise UnreadableFile("is a symbolic link loop")


_OUTSIDE = "is a symbolic link to a file outside the repository; only files inside it are read"


def _source_file(
    root: git.Tree, item: git.Blob, relative: str, location: GitLocation
) -> SourceFile:
    """The file a tree entry stands for; symlinks followed inside the config directory."""
    if item.mode == _SYMLINK_MODE:
        try:
            item = _link_target(root, item, location.subdirectory)
        except UnreadableFile as error:
            return SourceFile(relative, f"unreadable:{error}", _refusal(str(error)))
    elif item.mode not in _REGULAR_MODES:
        message = "is not a regular file; only regular files are read"
        return SourceFile(relative, f"unreadable:{message}", _refusal(message))
    return SourceFile(relative, item.hexsha, _blob_reader(item, location.lock))


def files_at(location: GitLocation, ref: str) -> tuple[list[SourceFile], Revision]:
    """The config YAML files of `ref`, read from git objects without a checkout.

    Raises:
        GitSourceError: when the ref does not exist or the directory is not in it.
    """
    with location.lock:
        return _files_at(location, ref)


def _files_at(location: GitLocation, ref: str) -> tuple[list[SourceFile], Revision]:
    commit = _resolve(location, ref)
    root = tree = commit.tree
    if location.subdirectory:
        try:
            tree = tree / location.subdirectory
        except KeyError as error:
            raise GitSourceError(
                f"{location.subdirectory!r} does not exist at {ref} ({commit.hexsha[:12]})"
            ) from error
    files = []
    ignore_is_directory = False
    for item in tree.traverse():
        if not isinstance(item, git.Blob):
            continue
        path = str(item.path)
        relative = str(PurePosixPath(path).relative_to(str(tree.path))) if tree.path else path
        relative = shown_path(relative)
        if is_source_path(relative):
            files.append(_source_file(root, item, relative, location))
        elif is_hidden_yaml(relative) and item.mode in _REGULAR_MODES:
            files.append(hidden_file(relative, _blob_reader(item, location.lock)))
        elif relative.startswith(IGNORE_FILE + "/") and not ignore_is_directory:
            ignore_is_directory = True
            files.append(ignore_directory())  # as in the working tree
    return files, _revision(commit, ref)


def worktree_revision(location: GitLocation) -> Revision:
    """The revision a working tree is at: HEAD, and whether its config files have edits."""
    with location.lock:
        return _worktree_revision(location)


def _worktree_revision(location: GitLocation) -> Revision:
    try:
        head = location.repo.head.commit
    except ValueError:
        return Revision(None, None, None, None, dirty=True)
    # A status check may refresh the index and take .git/index.lock; a commit running at the
    # same time (the operator API) would then fail. Reads never need that lock.
    with location.repo.git.custom_environment(GIT_OPTIONAL_LOCKS="0"):
        dirty = location.repo.is_dirty(untracked_files=True, path=location.subdirectory or None)
    return _revision(head, None, dirty)


# A clone or fetch taking longer is stopped: a remote that takes the connection and never
# answers held the server's start, or its follow loop, for good.
NETWORK_SECONDS = 300.0


def _unattended() -> dict[str, str]:
    """git's environment for talking to a remote with nobody at the terminal: no credential
    prompt, and ssh asks nothing either (host key, passphrase); a user's own
    `GIT_SSH_COMMAND` is kept."""
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes",
    }


def _network_failure(action: str, error: git.GitCommandError, seconds: float) -> str:
    stderr = str(error.stderr or "").strip()
    if "Timeout:" in stderr or "did not complete in" in stderr:
        return f"{action} did not finish within {seconds:g} s (the remote does not answer)"
    return f"{action} failed: {stderr or error}"


def mirror(url: str, directory: Path, seconds: float = NETWORK_SECONDS) -> git.Repo:
    """A bare mirror of a remote repository in `directory`, cloned on first use (within
    `seconds`; a clone cut short leaves nothing behind).

    Raises:
        GitSourceError: the repository cannot be cloned or opened.
    """
    try:
        if (directory / "HEAD").exists():
            return git.Repo(directory)
    except git.InvalidGitRepositoryError as error:
        raise GitSourceError(f"cannot open the mirror of {url} in {directory}: {error}") from error
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        git.Git().clone(
            "--mirror", "--", url, str(directory), env=_unattended(), kill_after_timeout=seconds
        )
        return git.Repo(directory)
    except (git.GitCommandError, git.InvalidGitRepositoryError) as error:
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(error, git.GitCommandError):
            raise GitSourceError(_network_failure(f"cloning {url}", error, seconds)) from error
        raise GitSourceError(f"cannot clone {url}: {error}") from error


def fetch(repo: git.Repo, seconds: float = NETWORK_SECONDS) -> None:
    """Fetch every ref of a mirror from its remote (within `seconds`).

    Raises:
        GitSourceError: the fetch failed (network, authentication, missing repository).
    """
    try:
        repo.git.fetch(
            "--prune",
            "origin",
            "+refs/heads/*:refs/heads/*",
            env=_unattended(),
            kill_after_timeout=seconds,
        )
    except git.GitCommandError as error:
        raise GitSourceError(_network_failure("git fetch", error, seconds)) from error


def commit_files(
    location: GitLocation, paths: list[Path], message: str, author: str, email: str
) -> str:
    """Commit exactly the given files (written or deleted), whatever else is staged.

    Returns:
        The new commit's SHA.
    """
    repo = location.repo
    top = Path(repo.working_tree_dir or ".").resolve()
    relative = [str(p.parent.resolve().relative_to(top) / p.name) for p in paths]
    identity = {
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": email,
    }
    with location.lock:
        try:
            repo.git.add("-A", "--", *relative)
            with repo.git.custom_environment(**identity):
                repo.git.commit("--no-verify", "-m", message, "--only", "--", *relative)
        except git.GitCommandError:
            repo.git.reset("-q", "--", *relative)  # leave the index as it was
            raise
        return str(repo.head.commit.hexsha)
