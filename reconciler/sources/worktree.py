"""Read a config repository's YAML files from a directory on disk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from reconciler.core.documents import (
    HIDDEN,
    SourceFile,
    UnreadableFile,
    git_blob_sha,
    shown_path,
)
from reconciler.core.ignore import IGNORE_FILE
from schemas.limits import MAX_FILE_BYTES

YAML_SUFFIXES = (".yaml", ".yml")


def is_config_path(relative: str) -> bool:
    """A YAML file outside hidden directories (`.git`, `.github`, ...)."""
    parts = relative.split("/")
    return relative.endswith(YAML_SUFFIXES) and not any(p.startswith(".") for p in parts)


def is_source_path(relative: str) -> bool:
    """A config YAML file, or the root `.reconcileignore` that the loader applies."""
    return relative == IGNORE_FILE or is_config_path(relative)


def is_hidden_yaml(relative: str) -> bool:
    """A YAML file left out for its hidden path (`.canaries/web.yaml`, `.draft.yaml`),
    which the load names in a notice; git's own directory is not config."""
    return (
        relative.endswith(YAML_SUFFIXES)
        and not is_config_path(relative)
        and relative.split("/", 1)[0] != ".git"
    )


def ignore_directory() -> SourceFile:
    """A directory where the root `.reconcileignore` belongs, as the load is handed it: an
    error, since its rules are not applied."""
    message = "is a directory, not a regular file; its rules are not applied"
    return SourceFile(IGNORE_FILE, f"unreadable:{message}", _refusal(message))


def hidden_file(relative: str, read: Callable[[], bytes]) -> SourceFile:
    """A hidden YAML file as the load is handed it: never loaded; `read` lets the load tell
    config (named in a notice) from other tools' files (`.github/workflows/*.yml`)."""
    return SourceFile(relative, HIDDEN, read)


# How many directories under hidden ones are looked through for YAML files at most (a
# `.venv` or `.tox` inside the repository can hold thousands).
MAX_HIDDEN_DIRECTORIES = 2_000
# ... and how many YAML files there are listed at most.
MAX_HIDDEN_FILES = 1_000


def _constant(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def _refusal(message: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise UnreadableFile(message)

    return read


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


_OUTSIDE = "is a symbolic link to a file outside the repository; only files inside it are read"


def read_regular(path: str, root: str) -> bytes:
    """The bytes of `path` if it is a regular file inside `root` (after symlinks), at most
    the file-size limit plus one byte (the loader reports a longer file).

    Args:
        path: the file, under `root`.
        root: the repository's directory, already resolved (`os.path.realpath`).

    Raises:
        UnreadableFile: with why in words; never the contents, nor where a link points.
    """
    opened = path
    try:
        if os.path.islink(path):
            # Outside first: whether a path outside the repository exists is not told.
            if not _inside(os.path.realpath(path), root):
                raise UnreadableFile(_OUTSIDE)
            try:
                target = os.path.realpath(path, strict=True)
            except FileNotFoundError:
                raise UnreadableFile(
                    "is a symbolic link to nothing (its target does not exist)"
                ) from None
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UnreadableFile("is a symbolic link loop") from None
                raise
            if not _inside(target, root):  # changed since the check above
                raise UnreadableFile(_OUTSIDE)
            opened = target  # what was checked is what is opened
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        # O_NOFOLLOW: a link swapped in since the check above is refused, not followed.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW
        descriptor = os.open(opened, flags)
    except OSError as error:
        raise UnreadableFile(f"cannot be read: {error.strerror or error}") from None
    with os.fdopen(descriptor, "rb") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(
                f"is {_kind_of(mode)}, not a regular file; only regular files are read"
            )
        return stream.read(MAX_FILE_BYTES + 1)


def _walk(
    root: str, hidden: list[str] | None = None
) -> Iterator[tuple[str, list[str], list[str], str | None]]:
    """(directory, links to directories, other entries, why it cannot be listed or None)
    for every directory under `root`, skipping hidden directories (added to `hidden`, but
    `.git`) and never following links, without recursion: Python 3.11's `os.walk` recurses
    once per level, and a repository can nest deeper than the stack."""
    pending = [root]
    while pending:
        directory = pending.pop()
        subdirectories: list[str] = []
        links: list[str] = []
        names: list[str] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        is_directory = entry.is_dir()
                    except OSError:
                        is_directory = False
                    if not is_directory:
                        names.append(entry.name)
                    elif entry.is_symlink():
                        links.append(entry.name)
                    elif not entry.name.startswith("."):
                        subdirectories.append(entry.name)
                    elif hidden is not None and entry.name != ".git":
                        hidden.append(entry.path)
        except OSError as error:
            yield directory, [], [], error.strerror or str(error)
            continue
        yield directory, sorted(links), sorted(names), None
        pending.extend(os.path.join(directory, d) for d in sorted(subdirectories, reverse=True))


def read_worktree(root: Path) -> list[SourceFile]:
    """Every YAML file under `root`, skipping hidden files and directories, and the root
    `.reconcileignore` (the loader leaves out what it matches).

    Only regular files inside `root` are read (symlinks to them included); any other file
    with a config name, and a directory that cannot be listed, is handed in as a
    `SourceFile` whose `read` raises `UnreadableFile`, so the load reports it by name with
    the other errors.

    Raises:
        FileNotFoundError: when `root` is not a directory.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"config repository {root} is not a directory")
    resolved = os.path.realpath(root)
    files: list[SourceFile] = []
    hidden: list[str] = []
    ignore = os.path.join(root, IGNORE_FILE)
    if os.path.isdir(ignore) and not os.path.islink(ignore):
        files.append(ignore_directory())
    for directory, links, names, unlisted in _walk(str(root), hidden):
        if unlisted is not None:
            # Its files would be missing from the load without a word: refused by name.
            message = f"is a directory that cannot be listed: {unlisted}"
            relative = _relative(directory, root) + "/"
            files.append(SourceFile(relative, f"unreadable:{message}", _refusal(message)))
            continue
        # A link to a directory is not followed; one with a config file's name is reported
        # like any other file that is not regular.
        for name in links:
            relative = _relative(os.path.join(directory, name), root)
            if is_source_path(relative):
                message = "is a symbolic link to a directory, not a regular file"
                files.append(SourceFile(relative, f"unreadable:{message}", _refusal(message)))
        for name in names:
            relative = _relative(os.path.join(directory, name), root)
            if not is_source_path(relative):
                if is_hidden_yaml(relative):
                    files.append(hidden_file(relative, _reader(directory, name, resolved)))
                continue
            try:
                content = read_regular(os.path.join(directory, name), resolved)
            except UnreadableFile as error:
                files.append(SourceFile(relative, f"unreadable:{error}", _refusal(str(error))))
                continue
            files.append(SourceFile(relative, git_blob_sha(content), _constant(content)))
    return files + _hidden_yaml(hidden, root, resolved)


def _reader(directory: str, name: str, resolved: str) -> Callable[[], bytes]:
    return lambda: read_regular(os.path.join(directory, name), resolved)


def _hidden_yaml(directories: list[str], root: Path, resolved: str) -> list[SourceFile]:
    """The YAML files under hidden `directories` (at most `MAX_HIDDEN_DIRECTORIES` of them
    looked through, `MAX_HIDDEN_FILES` listed), never loaded: the load reads them only to
    tell config from other tools' files."""
    found: list[SourceFile] = []
    looked = 0
    for top in directories:
        for directory, _, names, _ in _walk(top, hidden=None):
            looked += 1
            if looked > MAX_HIDDEN_DIRECTORIES:
                return found
            found += [
                hidden_file(relative, _reader(directory, name, resolved))
                for name in names
                if (relative := _relative(os.path.join(directory, name), root)).endswith(
                    YAML_SUFFIXES
                )
            ]
            if len(found) >= MAX_HIDDEN_FILES:
                return found[:MAX_HIDDEN_FILES]
    return found


def _relative(path: str, root: Path) -> str:
    """The file's name in the repository, as diagnostics and plans show it."""
    return shown_path(os.path.relpath(path, root).replace(os.sep, "/"))
