"""Following a log file as it grows, across truncation and rotation (rename + reopen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


class _Tail:
    """An open file, read on from where the last read stopped; keeps an unfinished line."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.partial = b""

    def lines(self) -> list[bytes]:
        *complete, self.partial = (self.partial + self.handle.read()).split(b"\n")
        return complete


class LogFollower:
    """Reads the lines appended to a file, across truncation and rotation (rename + reopen)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._current: _Tail | None = None
        # A rotated file stays followed: workers write to it until they reopen their logs.
        self._previous: _Tail | None = None

    def lines(self) -> list[bytes]:
        """Every complete line written since the last call."""
        found = self._previous.lines() if self._previous else []
        if self._current is not None:
            mine = os.fstat(self._current.handle.fileno())
            try:
                rotated = os.stat(self._path).st_ino != mine.st_ino
            except FileNotFoundError:
                rotated = False  # renamed, not yet reopened: keep reading the old file
            if rotated:
                found += self._current.lines()
                if self._previous:
                    self._previous.handle.close()
                self._previous, self._current = self._current, None
            elif mine.st_size < self._current.handle.tell():  # truncated
                self._current.handle.seek(0)
                self._current.partial = b""
        if self._current is None:
            try:
                self._current = _Tail(open(self._path, "rb"))  # noqa: SIM115 - stays open
            except FileNotFoundError:
                return found
        return found + self._current.lines()

    def close(self) -> None:
        """Close the followed files."""
        for tail in (self._previous, self._current):
            if tail is not None:
                tail.handle.close()
        self._previous = self._current = None
