"""The server's results history: old days moved to Parquet once an hour (docs/history.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from reconciler.server.supervise import Supervisor
from reconciler.store.archive import (
    ArchiveReport,
    delete_before,
    due_days,
    move_day,
    prepare,
)
from reconciler.store.db import Connection
from reconciler.store.handle import StateHandle

log = logging.getLogger("reconciler.history")

FIRST_RUN_AFTER = 60.0  # s after start: out of the way of the first reconcile and site build
INTERVAL = 3600.0


class HistoryKeeper:
    """Moves days older than `archive_after` out of the state file, and deletes history older
    than `delete_after`, on the writer, once an hour.

    Each day moves in its own write (a transaction), so ingest waits for at most one day's
    move at a time.
    """

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        directory: Path,
        archive_after: timedelta,
        delete_after: timedelta | None,
        interval: float = INTERVAL,
        loops: Supervisor | None = None,
    ) -> None:
        self._state = state
        self._clock = clock
        self.directory = directory
        self.archive_after = archive_after
        self.delete_after = delete_after
        self.interval = interval
        self._loops = loops
        self.runs = 0
        self.failures = 0
        self.last: ArchiveReport | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, first_run_after: float = FIRST_RUN_AFTER) -> None:
        self._task = asyncio.create_task(self._loop(first_run_after), name="results-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> ArchiveReport:
        """Archive (and delete) what is due now, a day per write: ingest waits for one day's
        move at most, never for a whole backlog."""
        now = self._clock()
        directory = self.directory.absolute()
        report = ArchiveReport(
            orphans_removed=await self._state.write(
                lambda c: prepare(c, directory, self.archive_after, self.delete_after)
            )
        )
        for day in await self._state.read(lambda c: due_days(c, now, self.archive_after)):
            log.info(await self._state.write(functools.partial(_move, directory, day, now, report)))
        if self.delete_after is not None:
            after = self.delete_after
            await self._state.write(lambda c: delete_before(c, now, after, report))
        self.runs += 1
        self.last = report
        if report.days_moved or report.days_deleted or report.orphans_removed:
            log.info(
                "results history: moved %d day(s) (%d rows, %d files) to %s; deleted %d "
                "day(s); removed %d file(s) left by an interrupted run",
                len(report.days_moved),
                report.rows_moved,
                report.files_written,
                directory,
                len(report.days_deleted),
                report.orphans_removed,
            )
        return report

    async def _loop(self, first_run_after: float) -> None:
        await asyncio.sleep(first_run_after)
        while True:
            try:
                await self.run_once()
            except Exception as error:  # noqa: BLE001 - the history must never take the server down
                self.failures += 1
                if self._loops is None:
                    log.exception("archiving results to %s failed", self.directory)
                else:  # logged with its traceback, counted, shown in /api/v1/status
                    self._loops.failed("history", error, f"archiving to {self.directory}")
            else:
                if self._loops is not None:
                    self._loops.succeeded("history")
            await asyncio.sleep(self.interval)


def _move(directory: Path, day: int, now: datetime, report: ArchiveReport, c: Connection) -> str:
    return move_day(c, directory, day, now, report)
