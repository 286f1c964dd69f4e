"""Each result row is stored once however it is re-sent, whether the writer's memory of recent
rows or the table decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import Connection, open_state
from reconciler.store.results import IngestBatch, RecentKeys, insert_results
from tests.rows import accepted_rows

NOW = datetime(2026, 12, 5, 12, 0, 30, tzinfo=UTC)


def rows(*minutes_ago: float, zone: timezone = UTC) -> AcceptedRows:
    return accepted_rows([(NOW - timedelta(minutes=m)).astimezone(zone) for m in minutes_ago])


def stored(connection: Connection) -> int:
    row = connection.execute("SELECT count(*) FROM results").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def connection(tmp_path: Path) -> Connection:
    opened = open_state(tmp_path / "state.duckdb")
    assert opened is not None
    return opened


def test_a_resent_batch_is_stored_once(connection: Connection) -> None:
    recent = RecentKeys()
    first = insert_results(connection, [IngestBatch(1, "eu-1", "eu", rows(1, 2, 3))], NOW, recent)
    assert first == {1: 3}
    # The same rows again, one written in another offset, beside a new one.
    again = [
        IngestBatch(2, "eu-1", "eu", rows(1, 2)),
        IngestBatch(3, "eu-1", "eu", rows(3, 4, zone=timezone(timedelta(hours=-5)))),
    ]
    assert insert_results(connection, again, NOW, recent) == {2: 0, 3: 1}
    assert stored(connection) == 4


def test_the_same_row_twice_in_one_insert_is_stored_once(connection: Connection) -> None:
    batches = [IngestBatch(1, "eu-1", "eu", rows(1, 1)), IngestBatch(2, "eu-1", "eu", rows(1))]
    assert insert_results(connection, batches, NOW, RecentKeys()) == {1: 1, 2: 0}
    assert stored(connection) == 1


def test_a_restarted_writer_remembers_what_the_table_holds(connection: Connection) -> None:
    insert_results(connection, [IngestBatch(1, "eu-1", "eu", rows(1, 2))], NOW, RecentKeys())
    restarted = RecentKeys()
    counts = insert_results(
        connection, [IngestBatch(2, "eu-1", "eu", rows(1, 2, 3))], NOW, restarted
    )
    assert counts == {2: 1}
    assert stored(connection) == 3


def test_rows_older_than_the_memory_are_checked_in_the_table(connection: Connection) -> None:
    recent = RecentKeys(span=timedelta(minutes=10))
    spooled = rows(60, 61, 62)  # an agent's spool sent after an hour's outage
    assert insert_results(connection, [IngestBatch(1, "eu-1", "eu", spooled)], NOW, recent) == {
        1: 3
    }
    assert insert_results(connection, [IngestBatch(2, "eu-1", "eu", spooled)], NOW, recent) == {
        2: 0
    }
    assert stored(connection) == 3


def test_a_full_memory_forgets_its_oldest_minutes_and_stays_exact(connection: Connection) -> None:
    recent = RecentKeys(max_keys=3)
    minutes = [8, 7, 6, 5, 4, 3, 2, 1]
    for batch, minute in enumerate(minutes):
        insert_results(connection, [IngestBatch(batch, "eu-1", "eu", rows(minute))], NOW, recent)
    assert recent.horizon is not None and recent.horizon > NOW - timedelta(minutes=5)
    everything = insert_results(
        connection, [IngestBatch(99, "eu-1", "eu", rows(*minutes))], NOW, recent
    )
    assert everything == {99: 0}
    assert stored(connection) == len(minutes)


def test_a_remembered_key_without_its_row_still_stores_the_row(connection: Connection) -> None:
    """The memory only sends a row to the table to decide; it never drops one on its own."""
    recent = RecentKeys()
    insert_results(connection, [IngestBatch(1, "eu-1", "eu", rows(5))], NOW, recent)
    fresh = rows(1)
    recent.add(recent.keys(fresh.table.append_column("agent", pa.array(["eu-1"]))))
    assert insert_results(connection, [IngestBatch(2, "eu-1", "eu", fresh)], NOW, recent) == {2: 1}
    assert stored(connection) == 2


def test_a_memory_numbering_too_many_identities_starts_again_and_stays_exact(
    connection: Connection,
) -> None:
    """Configs come and go: identities no longer sent are forgotten by starting again."""
    recent = RecentKeys(max_keys=2)
    old = ["eu-1", "eu-2", "eu-3", "eu-4", "eu-5"]
    for batch, agent in enumerate(old):
        fresh = insert_results(connection, [IngestBatch(batch, agent, "eu", rows(30))], NOW, recent)
        assert fresh == {batch: 1}
    assert len(recent._identities) == 5
    assert insert_results(connection, [IngestBatch(9, "eu-6", "eu", rows(1))], NOW, recent) == {
        9: 1
    }
    assert len(recent._identities) == 1, "only the identity sent since it started again"
    again = [
        IngestBatch(10 + i, agent, "eu", rows(m))
        for i, (agent, m) in enumerate([("eu-1", 30), ("eu-6", 1)])
    ]
    assert insert_results(connection, again, NOW, recent) == {10: 0, 11: 0}
    assert stored(connection) == 6
