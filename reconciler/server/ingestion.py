"""The ingest queue: requests hand over validated rows, one writer inserts them in groups."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from agent.metrics import Metrics
from reconciler.core.ingest import AcceptedRows
from reconciler.server.supervise import Supervisor
from reconciler.store.handle import StateHandle
from reconciler.store.results import IngestBatch, RecentKeys, insert_results

MAX_ROWS_PER_INSERT = 50_000
# While other requests are on their way (their bodies being read or parsed: `coming`), the
# writer waits up to LINGER_SECONDS for them before an insert of fewer than GROUP_ROWS:
# DuckDB stores a row of a 4,000-row insert for about 60 % of the CPU of a 500-row one. A
# request with none behind it is inserted at once.
GROUP_ROWS = 10_000
LINGER_SECONDS = 0.01

# Group commit made visible: rows per insert is the ratio of the first to the second.
ROWS_METRIC = "ingest_insert_rows_total"
INSERTS_METRIC = "ingest_inserts_total"
REQUESTS_METRIC = "ingest_insert_requests_total"


@dataclass
class _Pending:
    batch: IngestBatch
    done: asyncio.Future[int]


class IngestQueue:
    """Group commit: while one insert runs, the next requests queue up and go in together.

    Each request still learns exactly how many of its own rows were new.
    """

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
        linger: float = LINGER_SECONDS,
    ) -> None:
        """Args:
        state: the server's hold on the state file.
        clock: the current time (`received_at`).
        metrics: where the group commit is counted.
        linger: the longest wait for requests on their way before an insert.
        """
        self._linger = linger
        self._state = state
        self._clock = clock
        self._metrics = metrics
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._loops: Supervisor | None = None
        # This writer is the only one inserting results while the server holds the file.
        self._recent = RecentKeys()
        self._coming = 0  # requests whose rows are being read, not queued yet

    def start(self, loops: Supervisor | None = None) -> None:
        """Start the writer; under `loops`, a writer that fails is reported and restarted."""
        self._loops = loops
        if loops is None:
            self._task = asyncio.create_task(self._run(), name="ingest-writer")
        else:
            self._task = loops.task("ingest-writer", self._run)

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Around reading and parsing a request's rows: the writer waits for them a moment
        rather than insert without them. Leave it right before `submit` (with no `await` in
        between), or on failure."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1

    async def submit(self, agent: str, region: str, rows: AcceptedRows) -> int:
        """Queue rows for insertion and wait until they are stored; returns how many were new."""
        if not len(rows):
            return 0
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(IngestBatch(next(self._ids), agent, region, rows), done))
        return await done

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            group, rows = [first], len(first.batch.rows)
            loop = asyncio.get_running_loop()
            linger_until = loop.time() + self._linger
            while rows < MAX_ROWS_PER_INSERT:
                if self._queue.empty():
                    remaining = linger_until - loop.time()
                    if not self._coming or rows >= GROUP_ROWS or remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                group.append(item)
                rows += len(item.batch.rows)
            batches = [p.batch for p in group]
            try:
                counts = await self._state.write(
                    functools.partial(
                        insert_results, batches=batches, now=self._clock(), recent=self._recent
                    )
                )
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_result(counts[pending.batch.batch])
                if self._metrics is not None:
                    self._metrics.count(INSERTS_METRIC)
                    self._metrics.count(REQUESTS_METRIC, len(group))
                    self._metrics.count(ROWS_METRIC, rows)
            except Exception as error:  # noqa: BLE001 - every waiting request must hear of it
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                if self._loops is not None:
                    wait = self._loops.failed("ingest-writer", error, f"{rows} rows")
                    if not stopping:
                        await asyncio.sleep(wait)  # a failing state file is not hammered
                continue
            if self._loops is not None:
                self._loops.succeeded("ingest-writer")

    async def drain(self) -> None:
        """Store every row queued so far, then stop the writer (graceful shutdown)."""
        await self._queue.put(None)
        if self._task is not None:
            await self._task
