"""Each result row is stored once however it is re-sent, whether the writer's memory of recent
rows or the table decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import Connection, open_state
from reconciler.store.results import IngestBatch, RecentKeys, insert_results

NOW = datetime(2026, 12, 5, 12, 0, 30, tzinfo=UTC)


def rows(*minutes_ago: float, zone: timezone = UTC) -> AcceptedRows:
    accepted = AcceptedRows()
    for minutes in minutes_ago:
        accepted.canary.append("web/shop@eu-1")
        accepted.parent.append("web/shop")
        accepted.check_name.append("home")
        accepted.check_type.append("http")
        accepted.started_at.append((NOW - timedelta(minutes=minutes)).astimezone(zone))
        accepted.duration_ms.append(10.0)
        accepted.status.append("pass")
        accepted.retries.append(0)
        accepted.maintenance.append(False)
        accepted.code.append(200)
        accepted.message.append(None)
        accepted.phases.append(None)
    return accepted


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


def test_a_remembered_hash_without_its_row_still_stores_the_row(connection: Connection) -> None:
    """A hash collision (or a forgotten rollback) must never drop a new row."""
    recent = RecentKeys()
    insert_results(connection, [IngestBatch(1, "eu-1", "eu", rows(5))], NOW, recent)
    fresh = rows(1)
    started = fresh.started_at[0]
    recent.add([(int(started.timestamp()) // 60, hash(("eu-1", "web/shop@eu-1", "home", started)))])
    assert insert_results(connection, [IngestBatch(2, "eu-1", "eu", fresh)], NOW, recent) == {2: 1}
    assert stored(connection) == 2
