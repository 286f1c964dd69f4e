"""Forked processes rendering a build's pages, as a pool that is safe to fork from a server.

A render process is forked from whatever builds the site: `reconcile site build`, or a
running server with its threads, its event loop's signal handling, its sockets and files.
So each one first:

* ignores the signals sent to a whole process group (a terminal's interrupt, a service
  manager stopping the server's group): its parent decides when the pool ends, once the
  pages in hand are drawn;
* forgets the event loop's wake-up socket, into which a signal it received would otherwise
  be written, and which the server's loop reads (it stops on SIGTERM);
* dies with its parent (Linux `PR_SET_PDEATHSIG`): a parent killed outright leaves no render
  process holding its listening socket and files.

The pool always ends by closing its task queue and joining its processes, each of which
exits on its own once the pages handed out are drawn, also when the parent gives up on the
build (a page that cannot be drawn, an interrupt). Killing them instead races with the pool:
one killed while taking a task holds the queue's lock for good, and a replacement forked
behind the pool's back ignores the SIGTERM with which `terminate` ends it; either way the
pool never ended. After a build whose pages were all drawn, the joining (15-25 ms: the
processes free their memory and exit) is left to a thread, off the build's path; the next
pool, and `settle_pools`, wait for it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# Pools closed after a build, each joined by a thread of its own (see above).
_ENDING: list[threading.Thread] = []


@contextmanager
def render_pool(workers: int) -> Iterator[Pool]:
    """A pool of `workers` forked render processes, ended as described above."""
    settle_pools()
    context = multiprocessing.get_context("fork")
    pool = context.Pool(workers, initializer=_as_a_new_process, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        pool.close()
        pool.join()
        raise
    pool.close()
    ending = threading.Thread(target=pool.join, name="render-pool-end", daemon=True)
    ending.start()
    _ENDING.append(ending)


def settle_pools() -> None:
    """Wait until the render processes of the pools ended so far have exited."""
    while _ENDING:
        _ENDING.pop().join()


def _as_a_new_process(parent: int) -> None:
    """The pool's initializer, in each render process (`parent`: the forking process)."""
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
