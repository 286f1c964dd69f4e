"""Incidents as the state file lists them: `regions_down` and the timeline's order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.incidents import Action, OpenIncident, RegionStatus, TimelineEntry
from reconciler.store.db import Connection, open_state
from reconciler.store.incidents import IncidentWrite, list_incidents, save

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    opened = open_state(tmp_path / "state.duckdb")
    assert opened is not None
    yield opened
    opened.close()


def write(action: Action, *entries: tuple[float, str, RegionStatus]) -> IncidentWrite:
    timeline = [TimelineEntry(at(s), region, change) for s, region, change in entries]
    incident = None if action == "open" else OpenIncident(1, T0)
    return IncidentWrite("default/web", None, action, incident, timeline, T0)


def test_a_region_is_down_when_its_last_recorded_change_is_down(connection: Connection) -> None:
    # A state file written before changes were dated no earlier than the one before them:
    # spooled runs dated eu's `down` (t+12) before the `unknown` decided ahead of it (t+15).
    save(connection, [write("open", (0, "eu", "down"))])
    save(connection, [write("update", (15, "eu", "unknown"))])
    save(connection, [write("update", (12, "eu", "down"))])
    [incident] = list_incidents(connection, None, None, 10)
    assert incident["regions_down"] == ["eu"]


def test_changes_of_the_same_time_are_listed_in_the_order_they_were_decided(
    connection: Connection,
) -> None:
    save(connection, [write("open", (0, "eu", "down"))])
    save(connection, [write("update", (15, "eu", "unknown"))])
    save(connection, [write("update", (15, "eu", "down"))])
    [incident] = list_incidents(connection, None, None, 10)
    assert [(e["at"], e["change"]) for e in incident["timeline"]] == [
        ("2026-11-22T00:00:00Z", "down"),
        ("2026-11-22T00:00:15Z", "unknown"),
        ("2026-11-22T00:00:15Z", "down"),
    ]
    assert incident["regions_down"] == ["eu"]
