"""Forked processes rendering a build's pages, safe to fork from a server, and watched.

A render process is forked from whatever builds the site: `reconcile site build`, or a
running server with its threads, its event loop's signal handling, its sockets and files.
So each one first:

* ignores the signals sent to a whole process group (a terminal's interrupt, a service
  manager stopping the server's group): its parent decides when it ends, once the pages in
  hand are drawn;
* forgets the event loop's wake-up socket, into which a signal it received would otherwise
  be written, and which the server's loop reads (it stops on SIGTERM);
* dies with its parent (Linux `PR_SET_PDEATHSIG`): a parent killed outright leaves no render
  process holding its listening socket and files.

Each draws what its `draw` returns (chunks of pages claimed from a counter shared with the
parent) and sends it back over a pipe of its own, pickled, then exits. A render process that
is killed outright (`kill -9`, the OOM killer: it is a fork of a large process) closes its
pipe without sending anything: `collect` says so (None) rather than waiting for good, as
`multiprocessing.Pool` did (its result never came, and the server's site stopped changing);
the caller draws those pages itself. So it does for one that sends nothing for
`HUNG_AFTER_SECONDS` after every page was claimed (stuck: a lock another of the server's
threads held at the fork, say), which it kills first. The reaping of a process that sent its
pages (10-25 ms: it frees its memory and exits) is left to a thread, off the build's path;
the next forks, and `settle_render_processes`, wait for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

log = logging.getLogger("reconciler.sitebuild")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# A render process that has sent nothing this long after every page was claimed is stuck (it
# has at most one chunk of pages left: well under a second): it is killed, its pages drawn by
# the caller.
HUNG_AFTER_SECONDS = 60.0


# Render processes that sent their pages, each reaped by a thread of its own (see above).
_ENDING: list[threading.Thread] = []


@dataclass(frozen=True)
class RenderProcess:
    """A forked render process and the read end of its pipe."""

    pid: int
    pipe: int


def fork_render_processes(count: int, draw: Callable[[], Any]) -> list[RenderProcess]:
    """Fork `count` render processes, each running `draw()` and sending back its result
    (`collect`); `draw` sees the memory of this process as it is now."""
    settle_render_processes()
    parent = os.getpid()
    started: list[RenderProcess] = []
    for _ in range(count):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the render process: never returns
            _draw_and_send(parent, draw, write, [read, *(p.pipe for p in started)])
        os.close(write)
        started.append(RenderProcess(pid, read))
    return started


def _draw_and_send(parent: int, draw: Callable[[], Any], write: int, others: list[int]) -> NoReturn:
    code = 1
    try:
        for descriptor in others:
            os.close(descriptor)
        _as_a_new_process(parent)
        try:
            message: tuple[str, Any] = ("drawn", draw())
            code = 0
        except BaseException as error:  # noqa: BLE001 - sent to the parent, which raises it
            message = ("failed", _sendable(error))
        data = memoryview(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(write, data) :]
        os.close(write)
    finally:
        os._exit(code)  # no cleanup of the parent's: its files, threads and atexit are not ours


def _sendable(error: BaseException) -> BaseException:
    """`error` if it pickles (to be raised again in the parent), else its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any error that does not travel is sent as text
        return RuntimeError(f"a render process failed: {type(error).__name__}: {error}")
    return error


def collect(process: RenderProcess) -> Any | None:
    """What a render process drew, once it sent it; None when it died without sending
    (killed), or sent nothing for `HUNG_AFTER_SECONDS` (then it is killed). An exception
    it raised is raised here.

    Called once every page is claimed (the caller drew its own share): the process has at
    most a chunk of pages left to draw, a few hundred milliseconds at most.
    """
    data = bytearray()
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    hung = False
    # poll, not select: a server with many connections open hands out descriptors past
    # select's 1,024.
    waiting = select.poll()
    waiting.register(process.pipe, select.POLLIN)
    try:
        while True:
            wait = max(0.0, deadline - time.monotonic())
            if not waiting.poll(wait * 1000):
                hung = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                break
            chunk = os.read(process.pipe, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(process.pipe)
    try:
        kind, value = pickle.loads(data)
    except (EOFError, pickle.UnpicklingError):
        _, status = os.waitpid(process.pid, 0)
        if hung:
            ended = f"sent nothing {HUNG_AFTER_SECONDS:g} s after the last pages were taken: killed"
        elif os.WIFSIGNALED(status):
            ended = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            ended = f"exited with code {os.waitstatus_to_exitcode(status)}"
        log.warning(
            "render process %d %s before sending back the pages it drew; they are drawn again",
            process.pid,
            ended,
        )
        return None
    reaping = threading.Thread(
        target=_reap, args=(process.pid,), name="render-process-end", daemon=True
    )
    reaping.start()
    _ENDING.append(reaping)
    if kind == "failed":
        raise value
    return value


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def settle_render_processes() -> None:
    """Wait until the render processes forked so far have exited."""
    while _ENDING:
        _ENDING.pop().join()


def _as_a_new_process(parent: int) -> None:
    """First thing in each render process (`parent`: the forking process)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing kills it with its parent
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
