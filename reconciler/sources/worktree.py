"""Read a config repository's YAML files from a directory on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reconciler.core.documents import SourceFile, git_blob_sha
from reconciler.core.ignore import IGNORE_FILE

YAML_SUFFIXES = (".yaml", ".yml")


def is_config_path(relative: str) -> bool:
    """A YAML file outside hidden directories (`.git`, `.github`, ...)."""
    parts = relative.split("/")
    return relative.endswith(YAML_SUFFIXES) and not any(p.startswith(".") for p in parts)


def is_source_path(relative: str) -> bool:
    """A config YAML file, or the root `.reconcileignore` that the loader applies."""
    return relative == IGNORE_FILE or is_config_path(relative)


def _constant(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def read_worktree(root: Path) -> list[SourceFile]:
    """Every YAML file under `root`, skipping hidden files and directories, and the root
    `.reconcileignore` (the loader leaves out what it matches).

    Raises:
        FileNotFoundError: when `root` is not a directory.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"config repository {root} is not a directory")
    files: list[SourceFile] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
            if not is_source_path(relative):
                continue
            content = Path(directory, name).read_bytes()
            files.append(SourceFile(relative, git_blob_sha(content), _constant(content)))
    return files
