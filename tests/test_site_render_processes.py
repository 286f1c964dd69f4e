"""The render processes a publish forks (`render_pool.py`) must not reach the process that
forked them: a server stops on SIGTERM through its event loop, and a forked process inherits
the loop's signal handling (its handler, and the socket it wakes the loop through). Nor may
they outlive it: they hold its listening socket and files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from reconciler.sitebuild.model import Page
from reconciler.sitebuild.publish import PARALLEL_FROM, Publisher
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


def _signals() -> str:
    """How this process takes SIGTERM, and the wake-up socket a signal is written to (-1:
    none)."""
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return f"SIGTERM {signal.getsignal(signal.SIGTERM)!r}, wake-up {fd}"


def serve_and_publish(tmp: Path) -> dict[str, Any]:
    """Publish enough pages for render processes from a thread of an event loop that stops
    on SIGTERM, as `reconcile serve` does; what the loop saw and what the pages say."""
    site_dir = tmp / "site-src"
    (site_dir / "templates").mkdir(parents=True)
    (site_dir / "static").mkdir()
    (site_dir / "templates" / "page.html").write_text("<p>{{ n }}</p> <p>{{ signals }}</p>\n")

    def context(n: int) -> dict[str, Any]:
        return {"n": n, "signals": _signals()}

    pages = [
        Page(f"p/{n}.html", "page.html", lambda n=n: context(n), key=str(n))
        for n in range(PARALLEL_FROM + 20)
    ]
    publisher = Publisher(tmp / "out", site_dir, workers=2)

    async def serve() -> dict[str, Any]:
        stops: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: stops.append("SIGTERM"))
        try:
            here = _signals()
            await asyncio.to_thread(publisher.publish, pages, pages)
            for _ in range(20):  # a signal on the wake-up socket is handled within a turn
                await asyncio.sleep(0.01)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        return {"stops": stops, "server": here}

    seen = asyncio.run(serve())
    publisher.settle()
    out = publisher.site.current()
    assert out is not None
    seen["pages"] = sorted({(out / page.path).read_text().strip() for page in pages[:3]})
    seen["drawn"] = len(list((out / "p").iterdir()))
    return seen


def test_render_processes_forked_from_a_server_loop_neither_stop_nor_hang_it(
    tmp_path: Path,
) -> None:
    """The render processes draw every page, ignore SIGTERM (the parent ends the pool) and
    have no way into the loop: the pool's ending of them neither reaches the loop's handler
    nor leaves the pool waiting. (Run in a process of its own, with a deadline: forked with
    the server's signal handling, they did one or the other.)"""
    script = (
        "import json, sys, pathlib\n"
        "from tests.test_site_render_processes import serve_and_publish\n"
        "print(json.dumps(serve_and_publish(pathlib.Path(sys.argv[1]))))\n"
    )
    # A session of its own: a render process left waiting goes with it at the deadline.
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, err
    seen = json.loads(out)
    assert seen["stops"] == []
    assert "wake-up -1" not in seen["server"]  # the loop had its socket: the test's premise
    assert seen["drawn"] == PARALLEL_FROM + 20
    for n, html in zip((0, 1, 2), sorted(seen["pages"]), strict=True):
        assert html == f"<p>{n}</p> <p>SIGTERM &lt;Handlers.SIG_IGN: 1&gt;, wake-up -1</p>"


def render_until_killed(tmp: Path) -> None:
    """Publish pages whose drawing never ends (each render process waits on a pipe nobody
    writes), after leaving a file named after the process."""
    site_dir = tmp / "site-src"
    (site_dir / "templates").mkdir(parents=True)
    (site_dir / "static").mkdir()
    (site_dir / "templates" / "page.html").write_text("<p>{{ n }}</p>\n")
    never = tmp / "never"
    os.mkfifo(never)

    def context(n: int) -> dict[str, Any]:
        (tmp / f"drawing.{os.getpid()}").touch()
        return {"n": never.read_text()}

    pages = [
        Page(f"p/{n}.html", "page.html", lambda n=n: context(n), key=str(n))
        for n in range(PARALLEL_FROM + 20)
    ]
    Publisher(tmp / "out", site_dir, workers=2).publish(pages, pages)


def test_render_processes_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    """`kill -9` of the building process mid-render leaves no render process behind."""
    script = (
        "import sys, pathlib\n"
        "from tests.test_site_render_processes import render_until_killed\n"
        "render_until_killed(pathlib.Path(sys.argv[1]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, start_new_session=True
    )
    try:
        wait_for(lambda: len(list(tmp_path.glob("drawing.*"))) == 2, 30, "two render processes")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

        def gone() -> bool:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, 10, "the render processes to die with their parent")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def publish_a_failing_page(tmp: Path) -> None:
    """Publish pages one of which cannot be drawn."""
    site_dir = tmp / "site-src"
    (site_dir / "templates").mkdir(parents=True)
    (site_dir / "static").mkdir()
    (site_dir / "templates" / "page.html").write_text("<p>{{ n }}</p>\n")

    def context(n: int) -> dict[str, Any]:
        if n == PARALLEL_FROM // 2:
            raise ValueError(f"page {n} cannot be drawn")
        return {"n": n}

    pages = [
        Page(f"p/{n}.html", "page.html", lambda n=n: context(n), key=str(n))
        for n in range(PARALLEL_FROM + 20)
    ]
    Publisher(tmp / "out", site_dir, workers=2).publish(pages, pages)


def test_a_page_that_cannot_be_drawn_fails_the_build_and_ends_the_pool(tmp_path: Path) -> None:
    """A pool given up on ends as any other (its processes ignore the SIGTERM with which a
    pool is usually ended): the error reaches the caller, and no render process is left."""
    script = (
        "import sys, pathlib\n"
        "from tests.test_site_render_processes import publish_a_failing_page\n"
        "publish_a_failing_page(pathlib.Path(sys.argv[1]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 1
    assert f"ValueError: page {PARALLEL_FROM // 2} cannot be drawn" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.html"))
