"""Two pieces of a build at once, in two threads: one mostly DuckDB, the other mostly Python.

DuckDB runs a query without holding the GIL, but takes it back between the tasks of a query to
check for an interrupt (Ctrl-C). A thread running Python keeps the GIL for the interpreter's
switch interval (5 ms) at a time, so a query beside it waited up to 5 ms at each check: a
grouping of 20 M rows (0.12 s) beside a Python loop (0.18 s) took 0.37 s together, longer than
one after the other. With the switch interval at 50 µs while both run, 0.19 s.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")

# The interpreter's switch interval (s) while two pieces run side by side.
SWITCH_INTERVAL = 50e-6

_lock = threading.Lock()
_holders = 0  # calls running side by side now
_saved = 0.0  # the switch interval before the first of them


def side_by_side(background: Callable[[], A], foreground: Callable[[], B]) -> tuple[A, B]:
    """Run `background` in a thread of its own and `foreground` in this one; returns both
    results once both are done. An exception of either is raised here (`foreground`'s
    first), after both ended."""
    outcome: list[A] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(background())
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="site-build-beside", daemon=True)
    _shorten()
    try:
        thread.start()
        try:
            result = foreground()
        finally:
            thread.join()
    finally:
        _restore()
    if failure:
        raise failure[0]
    return outcome[0], result


def _shorten() -> None:
    global _holders, _saved  # noqa: PLW0603 - one switch interval per process
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, SWITCH_INTERVAL))
        _holders += 1


def _restore() -> None:
    global _holders  # noqa: PLW0603 - one switch interval per process
    with _lock:
        _holders -= 1
        if _holders == 0:
            sys.setswitchinterval(_saved)
