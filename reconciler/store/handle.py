"""The server's hold on the state file: one connection, one writer thread, parallel readers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from reconciler.store.db import Connection, open_state

T = TypeVar("T")


class StateHandle:
    """Every write runs on one thread, in submission order; reads run on their own cursors.

    DuckDB allows one writing process per file; the server keeps the file open for its whole
    life and funnels every write (applies, ingest, tokens) through `write`.
    """

    def __init__(self, path: Path, lock_timeout: float = 10.0) -> None:
        connection = open_state(path, lock_timeout=lock_timeout)
        assert connection is not None
        self.path = path
        self._connection: Connection = connection
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="state-reader")

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on the writer thread with the writing connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, work, self._connection)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on a reader thread with a cursor of its own."""

        def run() -> T:
            with self._connection.cursor() as cursor:
                return work(cursor)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, run)

    def close(self) -> None:
        """Finish queued writes, then release the file."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._connection.close()
