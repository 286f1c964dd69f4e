"""The ingest writer waits a moment for requests already on their way, and for no others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.metrics import Metrics
from reconciler.core.ingest import AcceptedRows
from reconciler.server.ingestion import INSERTS_METRIC, REQUESTS_METRIC, IngestQueue
from reconciler.store.handle import StateHandle
from tests.rows import accepted_rows
from tests.test_serving_ingest import counter

NOW = datetime(2026, 12, 5, 12, 0, 30, tzinfo=UTC)
# Far longer than any test takes: an insert that waited for it would time the test out.
LINGER = 60.0


def rows(*seconds_ago: int) -> AcceptedRows:
    return accepted_rows([NOW - timedelta(seconds=s) for s in seconds_ago])


def total(metrics: Metrics, name: str) -> float:
    """A counter's value as `/metrics` would show it."""
    return counter(metrics.render(), name)


def test_a_request_on_its_way_joins_the_insert_of_the_one_queued_before_it(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[int, int, float, float]:
        metrics = Metrics()
        queue = IngestQueue(StateHandle(tmp_path / "state.duckdb"), lambda: NOW, metrics, LINGER)
        queue.start()
        entered, read = asyncio.Event(), asyncio.Event()

        async def request() -> int:
            with queue.coming():  # as the route does while it reads and parses the body
                entered.set()
                await read.wait()
            return await queue.submit("eu-1", "eu", rows(2, 3))

        later = asyncio.create_task(request())
        await entered.wait()
        first = asyncio.create_task(queue.submit("eu-1", "eu", rows(1)))
        # Let the writer take the first request (yields, not time): with nothing else
        # coming it would insert it alone now.
        while not first.done() and not queue._queue.empty():
            await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        assert not first.done(), "inserted without the request on its way"
        read.set()
        stored = await asyncio.wait_for(asyncio.gather(first, later), 30)
        await queue.drain()
        return stored[0], stored[1], total(metrics, INSERTS_METRIC), total(metrics, REQUESTS_METRIC)

    first, later, inserts, requests = asyncio.run(main())
    assert (first, later) == (1, 2)
    assert (inserts, requests) == (1, 2)


def test_a_request_with_none_behind_it_is_stored_at_once(tmp_path: Path) -> None:
    async def main() -> int:
        queue = IngestQueue(StateHandle(tmp_path / "state.duckdb"), lambda: NOW, linger=LINGER)
        queue.start()
        stored = await asyncio.wait_for(queue.submit("eu-1", "eu", rows(1, 2)), 30)
        await queue.drain()
        return stored

    assert asyncio.run(main()) == 2


def test_a_request_that_fails_while_on_its_way_is_not_waited_for(tmp_path: Path) -> None:
    async def main() -> int:
        queue = IngestQueue(StateHandle(tmp_path / "state.duckdb"), lambda: NOW, linger=LINGER)
        queue.start()
        try:
            with queue.coming():
                raise ValueError("a body that is not a batch")
        except ValueError:
            pass
        stored = await asyncio.wait_for(queue.submit("eu-1", "eu", rows(1)), 30)
        await queue.drain()
        return stored

    assert asyncio.run(main()) == 1
