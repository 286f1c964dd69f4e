"""How runs count: degraded is up, maintenance is out of uptime, retries are kept; state files
and history files written before these columns existed still read the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core.agentconfig import AgentConfig
from reconciler.core.ingest import validate_rows
from reconciler.store import archive, reports
from reconciler.store.db import Connection, open_state
from reconciler.store.results import IngestBatch, insert_results
from tests.rows import RESULT_COLUMNS_V1

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
CANARY = "web/shop@eu-1"


def _config() -> AgentConfig:
    return AgentConfig(
        agent="eu-1",
        region="eu",
        body=b"{}",
        etag='"x"',
        canaries=frozenset({CANARY}),
        checks={CANARY: {"home": "http"}},
    )


def _row(minutes: int, status: str, **extra: object) -> dict[str, object]:
    return {
        "canary": CANARY,
        "check": "home",
        "started_at": (NOW - timedelta(minutes=minutes)).isoformat(),
        "duration_ms": 12.5,
        "status": status,
        **extra,
    }


def _store(connection: Connection, rows: list[dict[str, object]], maintenance: set[int]) -> None:
    verdict = validate_rows(rows, _config(), NOW)
    assert not verdict.dropped
    accepted = verdict.accepted
    accepted.mark_maintenance(sorted(maintenance))
    insert_results(connection, [IngestBatch(1, "eu-1", "eu", accepted)], NOW)


def test_degraded_counts_as_up_and_maintenance_runs_are_out_of_uptime(tmp_path: Path) -> None:
    connection = open_state(tmp_path / "state.duckdb")
    assert connection is not None
    with connection:
        rows = [
            _row(1, "pass"),
            _row(2, "pass", retries=2),
            _row(3, "degraded"),
            _row(4, "fail"),
            _row(5, "fail"),  # during maintenance
            _row(6, "error"),  # during maintenance
        ]
        _store(connection, rows, maintenance={4, 5})
        stored = connection.execute(
            "SELECT status, retries, maintenance FROM results ORDER BY started_at DESC"
        ).fetchall()
        assert stored == [
            ("pass", 0, False),
            ("pass", 2, False),
            ("degraded", 0, False),
            ("fail", 0, False),
            ("fail", 0, True),
            ("error", 0, True),
        ]
        figures = reports.uptime(connection, "web/shop", NOW - timedelta(hours=1), NOW, None)
        assert (figures["total"], figures["passed"]) == (4, 3)
        regions = reports.region_summaries(
            connection, "web/shop", NOW - timedelta(hours=1), NOW, None
        )
        assert (regions["eu"]["total"], regions["eu"]["passed"]) == (4, 3)


def test_a_row_claiming_too_many_retries_is_dropped_as_malformed() -> None:
    verdict = validate_rows([_row(1, "pass", retries=11), _row(2, "pass")], _config(), NOW)
    assert verdict.dropped == {"malformed": 1}
    assert len(verdict.accepted) == 1


def test_a_state_file_from_before_the_new_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    connection = open_state(path)
    assert connection is not None
    with connection:
        connection.execute("ALTER TABLE results DROP COLUMN retries")
        connection.execute("ALTER TABLE results DROP COLUMN maintenance")
        connection.execute(
            f"""INSERT INTO results ({RESULT_COLUMNS_V1}) VALUES
                ('eu-1', 'eu', $c, 'web/shop', 'home', 'http', $t, 10, 'pass', 200, NULL,
                 NULL, $t)""",
            {"c": CANARY, "t": NOW - timedelta(minutes=1)},
        )
    connection = open_state(path)
    assert connection is not None
    with connection:
        assert connection.execute("SELECT retries, maintenance FROM results").fetchall() == [
            (0, False)
        ]
        _store(connection, [_row(2, "fail", retries=1)], maintenance=set())
        figures = reports.uptime(connection, "web/shop", NOW - timedelta(hours=1), NOW, None)
        assert (figures["total"], figures["passed"]) == (2, 1)


def test_history_files_written_before_the_new_columns_still_read(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    connection = open_state(path)
    assert connection is not None
    old_day = NOW - timedelta(days=40)
    with connection:
        for minutes, status in ((0, "pass"), (10, "fail"), (20, "pass")):
            started = old_day + timedelta(minutes=minutes)
            connection.execute(
                f"""INSERT INTO results ({RESULT_COLUMNS_V1}) VALUES
                    ('eu-1', 'eu', $c, 'web/shop', 'home', 'http', $t, 10, $s, 200, NULL,
                     NULL, $t)""",
                {"c": CANARY, "t": started, "s": status},
            )
        report = archive.archive(connection, archive.history_dir(path), NOW)
        assert report.rows_moved == 3
        # Rewrite the day's file as a release before these columns wrote it.
        (file,) = archive.history_dir(path).rglob("*.parquet")
        old = tmp_path / "old.parquet"
        connection.execute(
            f"""COPY (SELECT * EXCLUDE (retries, maintenance) FROM read_parquet('{file}'))
                TO '{old}' (FORMAT parquet)"""
        )
        old.replace(file)
        since = old_day - timedelta(hours=1)
        figures = reports.uptime(connection, "web/shop", since, since + timedelta(days=1), None)
        assert (figures["total"], figures["passed"]) == (3, 2)
        assert connection.execute(
            "SELECT count(*), sum(retries), bool_or(maintenance) FROM results_all"
        ).fetchone() == (3, 0, False)
