"""nginx's processes, seen through /proc: a master's process group and children, whether a
pid still runs nginx, and signals to processes that may have exited meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def send_signal(pid: int, number: signal.Signals) -> None:
    """Send a signal to a process that may have exited meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def process_group(pgid: int) -> set[int]:
    """The pids of the processes in process group `pgid` (empty without /proc)."""
    return _with_stat(2, pgid)


def is_nginx(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx")
    except OSError:
        return False


def exited(pid: int) -> bool:
    """Whether the nginx process that was `pid` has exited: gone, a zombie, or the pid now
    another program's. Not by its command line alone: a killed process loses it (with its
    memory) before it closes its files, nginx's listening socket among them."""
    try:
        state = _stat_fields(Path(f"/proc/{pid}/stat").read_text())[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return True
    return state in ("Z", "X") or (bool(cmdline) and not cmdline.startswith(b"nginx"))


def runs(pid: int) -> bool:
    """Whether a process runs as `pid` (not gone, nor a zombie: those have no command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def children(pid: int) -> set[int]:
    """The pids of `pid`'s child processes (empty without /proc)."""
    return _with_stat(1, pid)


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after the command (which may hold spaces and
    parentheses): the state, the parent's pid, the process group, …"""
    return stat.rsplit(")", 1)[1].split()


def _with_stat(field: int, value: int) -> set[int]:
    """The pids whose /proc stat field `field` (of `_stat_fields`: 1 the parent's pid, 2 the
    process group) is `value`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            number = int(_stat_fields(stat.read_text())[field])
        except (OSError, IndexError, ValueError):
            continue
        if number == value:
            found.add(int(stat.parent.name))
    return found
