"""Where the CLI's output goes: results on stdout, progress, notes and errors on stderr."""

from __future__ import annotations

from typing import TextIO


class Console:
    """The one place commands print through, so that stdout can be redirected to a clean result.

    Attributes:
        out: results (plans, tokens, listings).
        err: progress, notes and errors.
        quiet: drop progress (and, for commands that say so, their success summary).
    """

    def __init__(self, out: TextIO, err: TextIO, quiet: bool = False) -> None:
        self.out, self.err, self.quiet = out, err, quiet

    def say(self, text: str) -> None:
        """A line of the command's result, on stdout."""
        print(text, file=self.out)

    def note(self, text: str) -> None:
        """A line for the person at the terminal, on stderr, even when quiet."""
        print(text, file=self.err)

    def progress(self, message: str) -> None:
        """`reconcile: message` on stderr, unless quiet."""
        if not self.quiet:
            print(f"reconcile: {message}", file=self.err)

    def error(self, message: str) -> None:
        """`Error: message` on stderr."""
        print(f"Error: {message}", file=self.err)
