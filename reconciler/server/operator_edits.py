"""Operator edits on the server's working tree: read, validate once, write, commit, apply."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.config_edits import SCHEMA_FILE, ConfigTree, Edited, SchemaFor
from reconciler.core.documents import UnreadableFile, git_blob_sha
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.sources.gitrepo import GitLocation, GitSourceError, files_at
from reconciler.sources.worktree import read_worktree

# -- the working tree on disk --------------------------------------------------------------------


def config_root(location: GitLocation) -> Path:
    """The config directory of a working tree."""
    top = Path(location.repo.working_tree_dir or ".")
    return top / location.subdirectory if location.subdirectory else top


def read_tree(root: Path) -> ConfigTree:
    """The config files of a directory, ready to edit.

    Raises:
        RequestRefused: 409 when a config file is not a regular file inside the repository.
    """
    files: dict[str, bytes] = {}
    for source in read_worktree(root):
        try:
            files[source.path] = source.read()
        except UnreadableFile as error:
            raise RequestRefused(
                409, f"the config repository cannot be edited: {source.path}: {error}"
            ) from None
    return ConfigTree(files)


def schema_reference(root: Path, top: Path, path: str, kind: str) -> str | None:
    """The `$schema` path of a new file, relative to it, when the JSON Schema is reachable.

    Looks for `schemas/jsonschema/<kind>.json` in the config directory and each parent up to
    the repository's top, as the sample repository's files do.
    """
    directory = (root / path).parent.resolve()
    candidate, top = root.resolve(), top.resolve()
    while True:
        schema = candidate / "schemas" / "jsonschema" / SCHEMA_FILE[kind]
        if schema.is_file():
            return Path(os.path.relpath(schema, directory)).as_posix()
        if candidate == top or candidate.parent == candidate:
            return None
        candidate = candidate.parent


def uncommitted(location: GitLocation, tree: ConfigTree, paths: list[str]) -> list[str]:
    """The paths whose working-tree content differs from HEAD (someone's unsaved work)."""
    try:
        head_files, _ = files_at(location, "HEAD")
    except GitSourceError:
        head_files = []
    head = {f.path: f.blob for f in head_files}
    dirty = []
    for path in paths:
        content = tree.original.get(path)
        if head.get(path) != (git_blob_sha(content) if content is not None else None):
            dirty.append(path)
    return dirty


def write_tree(root: Path, changes: Mapping[str, bytes | None]) -> list[Path]:
    """Write (atomically, file by file) or delete the changed files; returns their paths."""
    written = []
    for path, content in changes.items():
        target = root / path
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.operator-tmp")
            temporary.write_bytes(content)
            os.replace(temporary, target)
        written.append(target)
    return written


def restore_tree(root: Path, tree: ConfigTree, changes: Mapping[str, bytes | None]) -> None:
    """Put back the files an edit changed, as they were before it."""
    for path in changes:
        target = root / path
        original = tree.original.get(path)
        if original is None:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(original)


# -- one edit: one parse, one commit, one apply ---------------------------------------------------

AUTHOR = "canary-reconciler operator API"
AUTHOR_EMAIL = "operator@canary-reconciler.invalid"

Edit = Callable[[ConfigTree, SchemaFor], Edited]


@dataclass(frozen=True)
class Committed:
    """What an edit did: the edit, the revision now served, and what changed."""

    edited: Edited
    revision: str | None
    changed: bool
    files: list[str]
    warnings: list[str]

    def document(self) -> dict[str, Any]:
        """The JSON the operator API answers with, beside the edited object."""
        return {
            "revision": self.revision,
            "changed": self.changed,
            "message": self.edited.message or None,
            "files": self.files,
            "warnings": self.warnings,
        }


class OperatorEdits:
    """Makes operator edits to the server's working tree, one at a time.

    An edit reads the tree, applies the pure edit rules, loads the result once with the
    control plane's session (only the edited files are parsed), and only when it is valid
    writes the files, commits them and applies the same load; the watcher that sees the
    commit finds nothing new.
    """

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._lock = asyncio.Lock()

    async def commit(self, edit: Edit) -> Committed:
        """Edit the working tree, validate, commit and apply.

        Nothing is written unless the edited config loads without errors; the files are put
        back when the commit fails.

        Raises:
            RequestRefused: why not (409 read-only or uncommitted edits, 422 invalid, 500 git
                failed), or what the edit rules refused.
        """
        control = self._control
        location = control.source.writable
        if location is None:
            description = control.source.description
            raise RequestRefused(
                409,
                f"{description} is read-only: the operator API commits to a local working tree "
                "the server owns; change this repository with a commit instead",
                repository=description,
            )
        async with self._lock:
            root = config_root(location)
            top = Path(location.repo.working_tree_dir or root)
            tree = await asyncio.to_thread(read_tree, root)
            edited = edit(tree, lambda path, kind: schema_reference(root, top, path, kind))
            changes = tree.changes()
            if not changes:
                current = control.current.sha if control.current else None
                return Committed(edited, current, False, [], [])
            dirty = await asyncio.to_thread(uncommitted, location, tree, list(changes))
            if dirty:
                raise RequestRefused(
                    409,
                    "the files this edit touches have uncommitted changes in the server's "
                    "working tree; commit or discard them first",
                    files=dirty,
                )
            files = tree.source_files()
            loaded = await asyncio.to_thread(control.load_edit, files)
            errors = [d.format() for d in loaded.diagnostics if d.severity == "error"]
            if errors:
                raise RequestRefused(
                    422,
                    "the edit would make the configuration invalid; nothing was changed",
                    errors=errors,
                )
            warnings = [d.format() for d in loaded.diagnostics if d.severity == "warning"]
            paths = await asyncio.to_thread(write_tree, root, changes)
            try:
                sha, attempt = await control.commit_and_apply(
                    paths, edited.message, AUTHOR, AUTHOR_EMAIL, loaded, files
                )
            except GitSourceError as error:
                await asyncio.to_thread(restore_tree, root, tree, changes)
                raise RequestRefused(500, str(error)) from None
        if not attempt.applied:
            raise RequestRefused(
                500,
                f"committed {sha[:12]} but the control plane did not apply it",
                revision=sha,
                errors=attempt.errors,
            )
        return Committed(edited, sha, True, sorted(changes), warnings)
