"""The server's status-site rebuilds: on a timer, after each applied revision, and on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from reconciler.server.supervise import Supervisor
from reconciler.sitebuild.builder import Report, SiteBuilder
from reconciler.sitebuild.versions import site_root
from reconciler.store.handle import StateHandle

log = logging.getLogger("reconciler.site")


class LastBuild(NamedTuple):
    """The last build of the server's own site: when it was published, how long it took
    (refresh, collect and publish: what a reader waits for) and the pages it drew."""

    at: datetime
    seconds: float
    pages: int


class SiteRebuilder:
    """Keeps one site directory up to date from the server's own connection.

    The rollups are refreshed on the writer thread (short), the snapshot is read on a reader
    thread, and pages are rendered and swapped in atomically off the event loop, so a reader
    of the directory never sees a half-built site.
    """

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        out_dir: Path,
        interval: float,
        loops: Supervisor | None = None,
        agent_silent_after: timedelta | None = None,
        workers: int = 1,
    ) -> None:
        """Args:
        state: the server's hold on the state file.
        clock: the current time.
        out_dir: the site directory kept up to date.
        interval: seconds between rebuilds when nothing else asks for one.
        loops: where a failed rebuild is reported (it is tried again after a backoff).
        agent_silent_after: the server's silence threshold, for the site's silent agents
            (None: none shown).
        workers: processes rendering pages (forked; they take none of the server's
            signals: `sitebuild/render_processes.py`).
        """
        self._state = state
        self._clock = clock
        self.out_dir = out_dir
        self.interval = interval
        self._loops = loops
        self._silent_after = agent_silent_after
        self._workers = workers
        self._builders: dict[Path, SiteBuilder] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_build: LastBuild | None = None

    def wake(self) -> None:
        """Rebuild soon (a revision was published)."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="site-rebuilds")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def build(self, out_dir: Path | None = None) -> Report:
        """Build into `out_dir` (default: the server's site directory) now."""
        # Not `resolve()`: the site's directory is a link to its current version.
        target = site_root(out_dir or self.out_dir)
        builder = self._builders.setdefault(
            target,
            SiteBuilder(
                target,
                workers=self._workers,
                stage_ahead=True,
                agent_silent_after=self._silent_after,
            ),
        )
        async with self._lock:
            now = self._clock()
            started = time.monotonic()
            await self._state.write(lambda c: builder.refresh(c, now))
            collected = await self._state.read(lambda c: builder.collect(c, now))
            report = await asyncio.to_thread(builder.publish, collected)
            if target == site_root(self.out_dir):
                self.last_build = LastBuild(
                    self._clock(), time.monotonic() - started, report.published.rendered
                )
            # A window that moved is computed now, between builds, for the next to publish.
            await self._state.write(lambda c: builder.stage_ahead(c, now))
            # Holding no lock of the state: the pages staging moved (a new day's SLA pages),
            # then the build's objects freed.
            await asyncio.to_thread(builder.draw_ahead)
            await asyncio.to_thread(builder.tidy)
            return report

    def gauges(self) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        """`site_interval_seconds`, and once the server's own site was built, the last
        build's `site_last_build_timestamp_seconds`, `site_last_build_seconds` and
        `site_last_build_pages` (builds elsewhere, on request, are not counted)."""
        gauges: list[tuple[str, str, tuple[tuple[str, str], ...], float]] = [
            (
                "site_interval_seconds",
                "Seconds between status site rebuilds when nothing else asks for one.",
                (),
                self.interval,
            )
        ]
        last = self.last_build
        if last is not None:
            gauges += [
                (
                    "site_last_build_timestamp_seconds",
                    "When the last status site build was published (Unix time).",
                    (),
                    last.at.timestamp(),
                ),
                (
                    "site_last_build_seconds",
                    "How long the last status site build took, up to its publish.",
                    (),
                    last.seconds,
                ),
                (
                    "site_last_build_pages",
                    "Pages the last status site build drew.",
                    (),
                    float(last.pages),
                ),
            ]
        return gauges

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                report = await self.build()
            except Exception as error:  # noqa: BLE001 - the site must never take the server down
                if self._loops is None:
                    log.exception("status site rebuild failed")
                    continue
                # A rebuild that keeps failing is tried less often, and one wake-up is not lost.
                await asyncio.sleep(self._loops.failed("site-rebuilds", error))
                continue
            if self._loops is not None:
                self._loops.succeeded("site-rebuilds")
            log.debug("status site rebuilt in %s: %s", self.out_dir, report.timings)
