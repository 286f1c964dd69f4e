"""Processes started by tests die with the test run, also when pytest itself is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import children
from tests.conftest import ROOT
from tests.server import wait_for

# A test that starts the kinds of processes the suite starts, says their pids, then hangs
# until it is killed: a child in its own group with a grandchild (a server and what it runs),
# and a process in a session of its own that mentions the run's temporary directory (nginx).
SLEEPS = "time.sleep(300)"
TINY_TEST = """
import os
import subprocess
import sys
import threading

from tests import children

SLEEPER = "import time; time.sleep(300)"
FORKER = (
    "import subprocess, sys; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
    "print(p.pid, flush=True); p.wait()"
)


def test_hangs(tmp_path):
    child = children.popen([sys.executable, "-c", FORKER], stdout=subprocess.PIPE, text=True)
    grandchild = child.stdout.readline().strip()
    stray = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, str(tmp_path / "nginx.conf")], start_new_session=True
    )
    written = os.environ["TINY_PIDS"] + ".new"
    with open(written, "w") as pids:
        pids.write(f"{child.pid} {grandchild} {stray.pid}")
    os.replace(written, os.environ["TINY_PIDS"])  # seen whole or not at all
    threading.Event().wait(300)
"""


def _start_tiny_run(tmp_path: Path) -> tuple[subprocess.Popen[Any], list[int]]:
    test_file = tmp_path / "test_tiny.py"
    test_file.write_text(textwrap.dedent(TINY_TEST))
    pids_file = tmp_path / "pids"
    # The inner run uses the same plugin as this suite (tests/conftest.py imports it).
    run = children.popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.children", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "inner"), str(test_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TINY_PIDS": str(pids_file)},
    )  # fmt: skip
    try:
        wait_for(pids_file.exists, 60, "the tiny test to start its processes")
    except AssertionError:
        run.kill()
        raise
    return run, [int(pid) for pid in pids_file.read_text().split()]


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids to kill after the test whatever happened: a failing test must not leave them."""
    pids: list[int] = []
    yield pids
    ours = set(children.processes_mentioning(SLEEPS))  # not a pid reused since
    for pid in pids:
        if pid in ours:
            children.kill(pid, signal.SIGKILL)


LINUX_ONLY = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc and uses PR_SET_PDEATHSIG"
)


@LINUX_ONLY
def test_sigterm_to_pytest_stops_children_grandchildren_and_strays(
    tmp_path: Path, leftovers: list[int]
) -> None:
    run, pids = _start_tiny_run(tmp_path)
    leftovers.extend(pids)
    assert not any(children.gone(pid) for pid in pids), "the tiny test's processes run"

    run.send_signal(signal.SIGTERM)

    assert run.wait(timeout=30) == -signal.SIGTERM, "pytest still dies of the SIGTERM"
    for pid, what in zip(pids, ("child", "grandchild", "stray"), strict=True):
        wait_for(lambda pid=pid: children.gone(pid), 10, f"the {what} to be gone")


@LINUX_ONLY
def test_sigkill_to_pytest_still_stops_its_children(tmp_path: Path, leftovers: list[int]) -> None:
    run, pids = _start_tiny_run(tmp_path)
    leftovers.extend(pids)  # the grandchild and the stray need pytest's help, which SIGKILL denies

    run.kill()  # no Python code runs: only the kernel's parent-death signal is left
    run.wait(timeout=30)

    wait_for(lambda: children.gone(pids[0]), 10, "the child to be gone")
