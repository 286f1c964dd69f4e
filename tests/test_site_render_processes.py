"""The render processes a publish forks (`render_processes.py`) must not reach the process that
forked them: a server stops on SIGTERM through its event loop, and a forked process inherits
the loop's signal handling (its handler, and the socket it wakes the loop through). Nor may
they outlive it: they hold its listening socket and files.

Each case runs in a process of its own, in a session of its own, with a deadline: a render
process left waiting goes with the session, and a pool that never ends fails the test
rather than hanging the suite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reconciler.sitebuild import render_processes
from reconciler.sitebuild.model import Page
from reconciler.sitebuild.publish import PARALLEL_FROM, Publisher
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
PAGES = PARALLEL_FROM + 20  # enough for render processes


def _signals() -> str:
    """How this process takes SIGTERM, and the wake-up socket a signal is written to (-1:
    none); a page the server draws itself, on a thread of its own, says so."""
    if threading.current_thread() is not threading.main_thread():
        return "drawn by the server"
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return f"SIGTERM {signal.getsignal(signal.SIGTERM)!r}, wake-up {fd}"


def _pages(
    tmp: Path, template: str, context: Callable[[int], dict[str, Any]]
) -> tuple[Publisher, list[Page]]:
    """A publisher with one template into `tmp / "out"`, and `PAGES` keyed pages of it."""
    site_dir = tmp / "site-src"
    (site_dir / "templates").mkdir(parents=True)
    (site_dir / "static").mkdir()
    (site_dir / "templates" / "page.html").write_text(template)
    pages = [
        Page(f"p/{n}.html", "page.html", lambda n=n: context(n), key=str(n)) for n in range(PAGES)
    ]
    return Publisher(tmp / "out", site_dir, workers=2), pages


@contextlib.contextmanager
def _in_a_session(case: str, tmp: Path, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """`case(tmp)` (a function of this module) running in a process and session of its own;
    whatever is left of the session is killed on the way out."""
    script = (
        "import json, sys, pathlib\n"
        f"from tests.test_site_render_processes import {case}\n"
        f"print(json.dumps({case}(pathlib.Path(sys.argv[1]))))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp)],
        cwd=ROOT,
        text=True,
        start_new_session=True,
        **popen,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _run(case: str, tmp: Path) -> tuple[int, str, str]:
    """`case(tmp)` in a session of its own, within 60 s: exit code, output and errors."""
    with _in_a_session(case, tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def serve_and_publish(tmp: Path) -> dict[str, Any]:
    """Publish enough pages for render processes from a thread of an event loop that stops
    on SIGTERM, as `reconcile serve` does; what the loop saw and what the pages say."""
    # The server's own pages wait until its render process has drawn one: both draw some.
    marker = tmp / "a render process drew a page"

    def context(n: int) -> dict[str, Any]:
        if threading.current_thread() is threading.main_thread():
            marker.touch()
        else:
            wait_for(marker.exists, 30, "a page drawn by the render process")
        return {"n": n, "signals": _signals()}

    publisher, pages = _pages(tmp, "<p>{{ n }}</p> <p>{{ signals }}</p>\n", context)

    async def serve() -> dict[str, Any]:
        stops: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: stops.append("SIGTERM"))
        try:
            here = _signals()
            await asyncio.to_thread(publisher.publish, pages, pages)
            # A signal number on the wake-up socket is read in one turn, handled in the next.
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        return {"stops": stops, "server": here}

    seen = asyncio.run(serve())
    publisher.settle()
    out = publisher.site.current()
    assert out is not None
    seen["says"] = sorted(
        {(out / page.path).read_text().strip().split(" ", 1)[1] for page in pages}
    )
    seen["drawn"] = len(list((out / "p").iterdir()))
    return seen


def test_render_processes_forked_from_a_server_loop_neither_stop_nor_hang_it(
    tmp_path: Path,
) -> None:
    """The render processes draw every page, ignore SIGTERM (the parent ends the pool) and
    have no way into the loop: the pool's ending of them neither reaches the loop's handler
    nor leaves the pool waiting (forked with the server's signal handling, they did one or
    the other)."""
    code, out, err = _run("serve_and_publish", tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["stops"] == []
    assert "wake-up -1" not in seen["server"]  # the loop had its socket: the test's premise
    assert seen["drawn"] == PARALLEL_FROM + 20
    # The server draws pages too (on the thread publishing); its render process the others.
    assert seen["says"] == [
        "<p>SIGTERM &lt;Handlers.SIG_IGN: 1&gt;, wake-up -1</p>",
        "<p>drawn by the server</p>",
    ]


def render_until_killed(tmp: Path) -> None:
    """Publish pages whose drawing never ends (each render process waits on a pipe nobody
    writes), after leaving a file named after the process."""
    never = tmp / "never"
    os.mkfifo(never)

    def context(n: int) -> dict[str, Any]:
        (tmp / f"drawing.{os.getpid()}").touch()
        return {"n": never.read_text()}

    publisher, pages = _pages(tmp, "<p>{{ n }}</p>\n", context)
    publisher.publish(pages, pages)


def test_render_processes_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    """`kill -9` of the building process mid-render leaves no render process behind."""
    with _in_a_session("render_until_killed", tmp_path) as process:
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


def publish_a_failing_page(tmp: Path) -> None:
    """Publish pages one of which cannot be drawn."""

    def context(n: int) -> dict[str, Any]:
        if n == PARALLEL_FROM // 2:
            raise ValueError(f"page {n} cannot be drawn")
        return {"n": n}

    publisher, pages = _pages(tmp, "<p>{{ n }}</p>\n", context)
    publisher.publish(pages, pages)


def test_a_page_that_cannot_be_drawn_fails_the_build_and_ends_the_pool(tmp_path: Path) -> None:
    """A pool given up on ends as any other (its processes ignore the SIGTERM with which a
    pool is usually ended): the error reaches the caller, and no render process is left."""
    code, _, err = _run("publish_a_failing_page", tmp_path)
    assert code == 1
    assert f"ValueError: page {PARALLEL_FROM // 2} cannot be drawn" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.html"))


def listing_pages_alone(tmp: Path) -> dict[str, Any]:
    """A large site (1,400 canary pages), then a build that draws only its 40 pages listing
    the canaries: the processes that drew those."""
    site_dir = tmp / "site-src"
    (site_dir / "templates").mkdir(parents=True)
    (site_dir / "static").mkdir()
    (site_dir / "templates" / "page.html").write_text("<p>{{ n }} {{ pid }}</p>\n")
    parent, phase, drawn = os.getpid(), tmp / "second build", tmp / "drawn elsewhere"

    def context(n: int) -> dict[str, Any]:
        if phase.exists():
            if os.getpid() == parent:  # wait until another process drew one of them
                wait_for(drawn.exists, 10, "a listing page drawn by a render process")
            else:
                drawn.touch()
        return {"n": n, "pid": os.getpid()}

    canaries = [
        Page(f"c/{n}.html", "page.html", lambda n=n: context(n), key="k", leaf=True)
        for n in range(1400)
    ]
    listings = [Page(f"l/{n}.html", "page.html", lambda n=n: context(n)) for n in range(40)]
    publisher = Publisher(tmp / "out", site_dir, workers=2)
    publisher.publish(canaries + listings, canaries + listings)
    publisher.settle()
    phase.touch()
    publisher.publish(canaries + listings, publisher.stale(canaries + listings))
    publisher.settle()
    out = publisher.site.current()
    assert out is not None
    pids = {(out / page.path).read_text().split()[1].removesuffix("</p>") for page in listings}
    return {"parent": str(parent), "pids": sorted(pids)}


def test_a_build_drawing_only_the_listing_pages_of_a_large_site_forks_too(
    tmp_path: Path,
) -> None:
    """Forty pages, each listing every canary, took 0.25 s in one process at 1,000 canaries
    (a build with nothing new): under `PARALLEL_FROM` by count, well over it by weight."""
    code, out, err = _run("listing_pages_alone", tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert set(seen["pids"]) - {seen["parent"]}, seen  # a render process drew some


def _publish_with_a_failing_render_process(tmp: Path, fail: Callable[[], None]) -> dict[str, Any]:
    """Publish pages whose drawing in a render process calls `fail` (the publisher's own
    pages wait until a render process took some); what the publish and the site say."""
    parent = os.getpid()
    taken = tmp / "a render process took pages"

    def context(n: int) -> dict[str, Any]:
        if os.getpid() != parent:
            taken.touch()
            fail()
        wait_for(taken.exists, 30, "a render process taking pages")
        return {"n": n}

    publisher, pages = _pages(tmp, "<p>{{ n }}</p>\n", context)
    published = publisher.publish(pages, pages)
    publisher.settle()
    out = publisher.site.current()
    assert out is not None
    return {
        "rendered": published.rendered,
        "pages": sorted((out / page.path).read_text().strip() for page in pages),
    }


def render_process_killed(tmp: Path) -> dict[str, Any]:
    """A render process killed outright (as the OOM killer would pick it) on its first page."""
    return _publish_with_a_failing_render_process(tmp, lambda: os.kill(os.getpid(), signal.SIGKILL))


def test_a_render_process_killed_mid_build_leaves_its_pages_to_the_publisher(
    tmp_path: Path,
) -> None:
    """A render process killed outright (kill -9, the OOM killer: it is a fork of a large
    process) never sends back the pages it took. The publish notices it gone, draws those
    pages itself and completes (it waited forever, and a server's site stopped changing)."""
    code, out, err = _run("render_process_killed", tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["rendered"] == PAGES
    assert seen["pages"] == sorted(f"<p>{n}</p>" for n in range(PAGES))
    assert "render process" in err and "killed" in err  # logged: why this build took longer


def render_process_stuck(tmp: Path) -> dict[str, Any]:
    """A render process stuck on its first page (as a lock held by another of the server's
    threads at the fork would leave it), waited for a second at most."""
    render_processes.HUNG_AFTER_SECONDS = 1.0
    return _publish_with_a_failing_render_process(tmp, threading.Event().wait)


def test_a_stuck_render_process_is_killed_and_its_pages_drawn(tmp_path: Path) -> None:
    """A render process that sends nothing long after every page was taken is stuck: it is
    killed and its pages drawn by the publisher, which completes (it waited for good)."""
    code, out, err = _run("render_process_stuck", tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["rendered"] == PAGES
    assert seen["pages"] == sorted(f"<p>{n}</p>" for n in range(PAGES))
    assert "sent nothing 1 s after the last pages were taken: killed" in err


def publish_with_many_files_open(tmp: Path) -> dict[str, Any]:
    """Publish pages with render processes while over 1,024 descriptors are open, as in a
    server holding many connections; what the site holds afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    publisher, pages = _pages(tmp, "<p>{{ n }}</p>\n", lambda n: {"n": n})
    published = publisher.publish(pages, pages)
    publisher.settle()
    for descriptor in held:
        os.close(descriptor)
    out = publisher.site.current()
    assert out is not None
    return {
        "rendered": published.rendered,
        "pages": sorted((out / page.path).read_text().strip() for page in pages),
    }


def test_render_processes_are_waited_for_past_1024_open_descriptors(tmp_path: Path) -> None:
    code, out, err = _run("publish_with_many_files_open", tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["rendered"] == PAGES
    assert seen["pages"] == sorted(f"<p>{n}</p>" for n in range(PAGES))
