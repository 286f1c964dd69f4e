"""Results history: old days moved out of the state file into Parquet, read back through a view.

The live `results` table keeps recent days; a day older than the archive age moves to
Parquet files partitioned Hive-style by day and region (docs/history.md):

    <history>/day=2026-11-01/region=eu/part-1764806400000000.parquet

Each file holds one day's rows of one region, without the `region` column (its value is in
the path, as Hive partitioning has it), sorted by canary and start time. A day that gets
late rows after it was moved gets another `part-` file the next time archiving runs.

**Exactly one place.** One transaction per day writes the day's files (from its own
snapshot, flushed to disk), lists them in `archive_files`, deletes the day's rows from
`results` and redefines the view `results_all` over the listed files. A crash before the
commit leaves files that no view lists (the next run removes them, `sweep`); after it, the
rows are in the files only. Deleting old history is the same the other way round: the
files leave the list (and the view) in one transaction, and are unlinked after it.

**One view.** `results_all` is `results` plus every listed file, with the columns of
`results`. Queries over time ranges take `source(connection, since)`: `results` alone when
nothing before `since` was ever archived (the common, cheap case), `results_all` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module's constants without loading DuckDB
    from reconciler.store.db import Connection

DAY_SECONDS = 86_400
DEFAULT_ARCHIVE_AFTER = timedelta(days=35)
# Every column of `results` but `region`, which the path holds.
FILE_COLUMNS = (
    "agent, canary, parent, check_name, check_type, started_at, duration_ms, status, code, "
    "message, phases, received_at, retries, maintenance"
)
RESULT_COLUMNS = (
    "agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status, "
    "code, message, phases, received_at, retries, maintenance"
)
VIEW = "results_all"
# Rows started before this (epoch seconds) may be in the history; none after.
ARCHIVED_UNTIL = "archived_until"


class ArchiveError(Exception):
    """History cannot be written or read as asked."""


@dataclass
class ArchiveReport:
    """What one archiving run did."""

    days_moved: list[date] = field(default_factory=list)
    rows_moved: int = 0
    files_written: int = 0
    bytes_written: int = 0
    days_deleted: list[date] = field(default_factory=list)
    files_deleted: int = 0
    orphans_removed: int = 0


def history_dir(state: Path) -> Path:
    """The default history directory: next to the state file."""
    return state.with_name(f"{state.name}.history")


def source(connection: Connection, since: datetime | None, until: datetime | None = None) -> str:
    """SQL for the relation holding every result started in [since, until) (None: no bound).

    `results` alone when nothing before `since` was ever archived (the common, cheap case);
    otherwise `results` and the files of the days the range touches, and only those: a
    query over a week of last year reads seven days of files, not all of them.
    """
    row = connection.execute(
        "SELECT value FROM meta WHERE key = $key", {"key": ARCHIVED_UNTIL}
    ).fetchone()
    if row is None or (since is not None and since.timestamp() >= int(row[0])):
        return "results"
    paths = [
        found[0]
        for found in connection.execute(
            """SELECT path FROM archive_files
               WHERE ($first::DATE IS NULL OR day >= $first)
                 AND ($last::DATE IS NULL OR day <= $last)
               ORDER BY path""",
            {
                "first": since.astimezone(UTC).date() if since is not None else None,
                "last": until.astimezone(UTC).date() if until is not None else None,
            },
        ).fetchall()
    ]
    if not paths:
        return "results"
    return f"({_union(paths)})"


def _union(paths: list[str]) -> str:
    """`results` and the files at `paths`, with the columns of `results`."""
    listed = ", ".join(_quoted(path) for path in paths)
    return f"""SELECT {RESULT_COLUMNS} FROM results
            UNION ALL
            SELECT agent, region, canary, parent, check_name, check_type, started_at,
                   duration_ms, status, code, message, phases::JSON, received_at,
                   coalesce(retries, 0)::SMALLINT, coalesce(maintenance, false)
            FROM (SELECT * FROM read_parquet([{listed}], hive_partitioning = true,
                                            union_by_name = true,
                                            hive_types = {{'day': DATE, 'region': VARCHAR}})
                  -- Files written before `retries` and `maintenance` existed lack them.
                  UNION ALL BY NAME
                  SELECT NULL::SMALLINT AS retries, NULL::BOOLEAN AS maintenance WHERE false)"""


def _day_path(directory: Path, day: int, region: str) -> Path:
    iso = datetime.fromtimestamp(day * DAY_SECONDS, UTC).date().isoformat()
    return directory / f"day={iso}" / f"region={region}"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def define_view(connection: Connection) -> None:
    """(Re)define `results_all` over `results` and every listed file (in the caller's
    transaction)."""
    paths = [
        row[0]
        for row in connection.execute("SELECT path FROM archive_files ORDER BY path").fetchall()
    ]
    body = _union(paths) if paths else f"SELECT {RESULT_COLUMNS} FROM results"
    connection.execute(f"CREATE OR REPLACE VIEW {VIEW} AS {body}")


def sweep(connection: Connection, directory: Path) -> int:
    """Remove files under `directory` that no committed transaction listed (left by a run
    that stopped before its commit). Returns how many."""
    if not directory.is_dir():
        return 0
    listed = {row[0] for row in connection.execute("SELECT path FROM archive_files").fetchall()}
    removed = 0
    for path in directory.glob("day=*/region=*/part-*.parquet*"):
        if str(path) not in listed:
            path.unlink()
            removed += 1
    return removed


def _days(age: timedelta) -> str:
    """`35 days` (ages are whole days), rather than timedelta's `35 days, 0:00:00`."""
    return f"{age.days} day{'s' if age.days != 1 else ''}"


def prepare(
    connection: Connection,
    directory: Path,
    archive_after: timedelta,
    delete_after: timedelta | None,
) -> int:
    """Check the ages, create the directory and sweep files an interrupted run left;
    returns how many were swept.

    Raises:
        ArchiveError: the directory cannot be written, or the ages are out of order.
    """
    if delete_after is not None and delete_after < archive_after:
        raise ArchiveError(
            f"history kept for {_days(delete_after)} would delete days still live "
            f"(archive age {_days(archive_after)}): keep history at least as long as the "
            "archive age"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArchiveError(f"cannot create history directory {directory}: {error}") from error
    return sweep(connection, directory)


def due_days(connection: Connection, now: datetime, archive_after: timedelta) -> list[int]:
    """The days (since the epoch, UTC) with live rows older than the archive age."""
    cutoff = int((now - archive_after).timestamp()) // DAY_SECONDS
    return [
        row[0]
        for row in connection.execute(
            """SELECT DISTINCT epoch(started_at)::BIGINT // $d AS day FROM results
               WHERE started_at < $cutoff ORDER BY day""",
            {"d": DAY_SECONDS, "cutoff": datetime.fromtimestamp(cutoff * DAY_SECONDS, UTC)},
        ).fetchall()
    ]


def archive(
    connection: Connection,
    directory: Path,
    now: datetime,
    archive_after: timedelta = DEFAULT_ARCHIVE_AFTER,
    delete_after: timedelta | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ArchiveReport:
    """Move the days before `now - archive_after` out of `results`, then delete history
    older than `delete_after` (None: keep it forever), on a writing connection outside any
    transaction. One transaction per day moved: a run stopped half way has moved whole days
    (the server runs each step as a write of its own, `controllers/history.py`).

    Raises:
        ArchiveError: the directory cannot be written, or the ages are out of order.
    """
    import duckdb  # here: the CLI imports this module's constants without loading DuckDB

    from reconciler.store import days  # here: it imports this module

    directory = directory.absolute()
    report = ArchiveReport(
        orphans_removed=prepare(connection, directory, archive_after, delete_after)
    )
    # The per-day tier of the days to move first (a state file that predates the tier is
    # backfilled once, here): each day's move then only has to add what arrived since.
    days.fill(connection, now - archive_after, progress)
    for day in due_days(connection, now, archive_after):
        try:
            moved = move_day(connection, directory, day, now, report)
        except (duckdb.Error, OSError) as error:  # e.g. the disk filled while writing a file
            # Each day is one transaction: the days moved so far stay moved, the rest live.
            raise ArchiveError(
                f"archiving stopped at {datetime.fromtimestamp(day * DAY_SECONDS, UTC).date()} "
                f"({len(report.days_moved)} day(s) moved before it): {error}"
            ) from error
        progress(moved)
    if delete_after is not None:
        delete_before(connection, now, delete_after, report)
    return report


def move_day(
    connection: Connection, directory: Path, day: int, now: datetime, report: ArchiveReport
) -> str:
    """Move one day (`due_days`) and count it in `report`; returns a line saying so."""
    rows, files, size = _move_day(connection, directory, day, now)
    report.days_moved.append(datetime.fromtimestamp(day * DAY_SECONDS, UTC).date())
    report.rows_moved += rows
    report.files_written += files
    report.bytes_written += size
    return (
        f"archived {report.days_moved[-1]}: {rows:,} rows in {files} file(s), "
        f"{size / 2**20:.1f} MiB"
    )


def delete_before(
    connection: Connection, now: datetime, delete_after: timedelta, report: ArchiveReport
) -> None:
    """Delete the history of the days older than `delete_after`, counted in `report`."""
    _delete_before(connection, int((now - delete_after).timestamp()) // DAY_SECONDS, report)


def _move_day(
    connection: Connection, directory: Path, day: int, now: datetime
) -> tuple[int, int, int]:
    """Write one day's rows to a file per region and remove them from `results`, in one
    transaction: the files are copied from the snapshot the delete removes."""
    low = datetime.fromtimestamp(day * DAY_SECONDS, UTC)
    high = low + timedelta(days=1)
    span = {"lo": low, "hi": high}
    stamp = int(now.timestamp() * 1_000_000)
    from reconciler.store import days  # here: it imports this module
    from reconciler.store.db import transaction  # here: see the imports above

    with transaction(connection):
        # The day's tier rows, from the rows about to move and the day's earlier files: in
        # this transaction, so the tier never counts a row the history does not hold.
        days.ensure(connection, day)
        regions = [
            row[0]
            for row in connection.execute(
                "SELECT DISTINCT region FROM results WHERE started_at >= $lo AND started_at < $hi "
                "ORDER BY region",
                span,
            ).fetchall()
        ]
        written = 0
        size = 0
        for region in regions:
            folder = _day_path(directory, day, region)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{stamp}.parquet"
            copied = connection.execute(
                f"""COPY (SELECT {FILE_COLUMNS} FROM results
                          WHERE started_at >= $lo AND started_at < $hi AND region = $region
                          ORDER BY parent, started_at)
                    TO {_quoted(str(path))} (FORMAT parquet, COMPRESSION zstd)""",
                {**span, "region": region},
            ).fetchone()
            _fsync(path)
            _fsync(folder)
            rows, bytes_ = int(copied[0]) if copied else 0, path.stat().st_size
            connection.execute(
                "INSERT INTO archive_files VALUES ($path, $day, $region, $rows, $bytes, $at)",
                {"path": str(path), "day": low.date(), "region": region, "rows": rows,
                 "bytes": bytes_, "at": now},
            )  # fmt: skip
            written += rows
            size += bytes_
        deleted = connection.execute(
            "DELETE FROM results WHERE started_at >= $lo AND started_at < $hi", span
        ).fetchone()
        if (int(deleted[0]) if deleted else 0) != written:
            raise ArchiveError(f"rows of {low.date()} changed while it was archived; run again")
        _raise_archived_until(connection, int(high.timestamp()))
        define_view(connection)
    return written, len(regions), size


def _raise_archived_until(connection: Connection, until: int) -> None:
    row = connection.execute(
        "SELECT value FROM meta WHERE key = $key", {"key": ARCHIVED_UNTIL}
    ).fetchone()
    value = max(until, int(row[0]) if row else 0)
    connection.execute("DELETE FROM meta WHERE key = $key", {"key": ARCHIVED_UNTIL})
    connection.execute(
        "INSERT INTO meta VALUES ($key, $value)", {"key": ARCHIVED_UNTIL, "value": str(value)}
    )


def _delete_before(connection: Connection, day: int, report: ArchiveReport) -> None:
    """Drop history of the days before `day`: unlisted in one transaction, then unlinked."""
    from reconciler.store.db import transaction  # here: see the imports above

    boundary = datetime.fromtimestamp(day * DAY_SECONDS, UTC).date()
    with transaction(connection):
        rows = connection.execute(
            "DELETE FROM archive_files WHERE day < $day RETURNING path, day", {"day": boundary}
        ).fetchall()
        # The per-day tier forgets the deleted days too: no figure counts runs no row holds.
        connection.execute("DELETE FROM result_days WHERE day < $day", {"day": day})
        define_view(connection)
    for path, _ in rows:
        Path(path).unlink(missing_ok=True)
        for folder in (Path(path).parent, Path(path).parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty
    report.files_deleted += len(rows)
    report.days_deleted = sorted({found for _, found in rows})


def export(connection: Connection, since: datetime, until: datetime, out: Path) -> tuple[int, int]:
    """Write the results started in [since, until) — live or archived — to `out` in the
    history's layout. Returns (rows, files).

    Raises:
        ArchiveError: `out` holds files already, or cannot be written.
    """
    if out.exists() and not out.is_dir():
        raise ArchiveError(f"{out} is not a directory: export into a new or empty directory")
    if out.exists() and any(out.iterdir()):
        raise ArchiveError(f"{out} is not empty: export into a new or empty directory")
    if until <= since:
        raise ArchiveError(f"--until ({until:%Y-%m-%dT%H:%M:%SZ}) must be after --since")
    import duckdb  # here: see `archive`

    relation = source(connection, since, until)
    try:
        out.mkdir(parents=True, exist_ok=True)
        count = connection.execute(
            f"""COPY (SELECT {FILE_COLUMNS}, region,
                             strftime(make_timestamp(epoch_us(started_at)), '%Y-%m-%d') AS day
                      FROM {relation} WHERE started_at >= $since AND started_at < $until
                      ORDER BY day, region, parent, started_at)
                TO {_quoted(str(out.absolute()))}
                (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day, region),
                 FILENAME_PATTERN 'part-export-{{i}}')""",
            {"since": since, "until": until},
        ).fetchone()
    except (duckdb.Error, OSError) as error:
        raise ArchiveError(f"cannot write {out}: {error}") from error
    files = sum(1 for _ in out.glob("day=*/region=*/*.parquet"))
    return (int(count[0]) if count else 0), files


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (a rename or a listing must not outlive a crash)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
