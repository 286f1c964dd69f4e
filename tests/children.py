"""Processes the tests start die with the test run, also when pytest is killed.

Three nets, because each misses something:
- `popen` starts a child in its own process group and, on Linux, asks the kernel to send it
  SIGTERM when pytest dies (PR_SET_PDEATHSIG): that covers SIGKILL of pytest, where no
  Python code runs. SIGTERM rather than SIGKILL so that a server stops its nginx on the way.
- On SIGTERM, and when the session ends, every group started with `popen` is sent SIGTERM,
  then SIGKILL if it lingers, so a child's own children go too.
- Processes not started by us but left behind for us (nginx masters run in their own session
  so they outlive a controller; children of a server killed hard) are found by the session's
  temporary directory in their command line, which no other run's processes have.

Used as a pytest plugin (`-p tests.children`, or imported by tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.waiting import holds_within

PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 5.0

_live: list[subprocess.Popen[Any]] = []
# Looked up here, not in the forked child, where only async-signal-safe work belongs.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: SIGTERM this child when `parent` dies, also if it already has."""

    def arm() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork and prctl: nothing would signal us then.
        if os.getppid() != parent:
            os._exit(1)

    return arm


def popen(args: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` for tests: own process group, stopped with the test run."""
    process: subprocess.Popen[Any] = subprocess.Popen(
        args, start_new_session=True, preexec_fn=_die_with(os.getpid()), **kwargs
    )
    _live[:] = [p for p in _live if p.poll() is None]
    _live.append(process)
    return process


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie nobody reaped counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return fields[0] in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """The pids of processes whose command line contains `text` (this one excluded)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = path.read_bytes()
        except OSError:
            continue
        pid = int(path.parent.name)
        if text.encode() in cmdline and pid != os.getpid() and not gone(pid):
            found.append(pid)
    return found


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    return holds_within(lambda: all(gone(pid) for pid in pids), timeout)


def kill(pid: int, signum: int) -> None:
    """Signal a process, and its group when it leads one (nginx masters do)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(basetemp: Path | None = None, grace: float = GRACE_SECONDS) -> None:
    """Stop every child started with `popen`, and strays mentioning `basetemp`.

    SIGTERM first, so servers stop their nginx and agents flush; SIGKILL after `grace`.
    """
    running = [p.pid for p in _live if p.poll() is None]
    strays = processes_mentioning(f"{basetemp}{os.sep}") if basetemp else []
    for pid in running + strays:
        kill(pid, signal.SIGTERM)
    if not _wait_gone(running + strays, grace):
        for pid in running + strays:
            kill(pid, signal.SIGKILL)
    for process in _live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    _live[:] = [p for p in _live if p.poll() is None]


@pytest.fixture(scope="session", autouse=True)
def children_die_with_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop the test run's children at its end, and on SIGTERM before dying of it."""
    basetemp = tmp_path_factory.getbasetemp()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop_all(basetemp)
        # Die of the signal as before, so whoever sent it sees the usual exit status.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_all(basetemp)
