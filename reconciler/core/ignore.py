""".reconcileignore: leave files of the config repository out of a load, in gitignore syntax."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pathspec

from reconciler.core.documents import SourceFile

IGNORE_FILE = ".reconcileignore"


@dataclass(frozen=True)
class IgnoreRules:
    """The patterns of a `.reconcileignore`, matched as git matches a root `.gitignore`."""

    spec: pathspec.GitIgnoreSpec

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        """Read gitignore syntax: comments, blank lines, `!` negation, trailing `/` for
        directories, a leading or inner `/` anchoring at the root, `*`, `?`, `[...]`, `**`."""
        return cls(pathspec.GitIgnoreSpec.from_lines(text.splitlines()))

    def ignores(self, path: str) -> bool:
        """Whether a repository-relative file path (`/`-separated) is left out.

        As in git, a file inside an ignored directory stays ignored even when a later `!`
        pattern names the file: git never looks inside a directory it ignores.
        """
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self.spec.match_file("/".join(parts[:depth]) + "/"):
                return True
        return bool(self.spec.match_file(path))


def without_ignored(files: Iterable[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split a revision's files by the root `.reconcileignore` handed in among them.

    Args:
        files: every file a source read, the ignore file included when there is one.

    Returns:
        (the config files to load, the files the ignore file left out); the ignore file
        itself is in neither list.
    """
    listed = list(files)
    ignore = next((f for f in listed if f.path == IGNORE_FILE), None)
    others = [f for f in listed if f.path != IGNORE_FILE]
    if ignore is None:
        return others, []
    rules = IgnoreRules.parse(ignore.read().decode("utf-8", errors="replace"))
    kept: list[SourceFile] = []
    left_out: list[SourceFile] = []
    for source in others:
        (left_out if rules.ignores(source.path) else kept).append(source)
    return kept, left_out
