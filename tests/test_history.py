"""Results history: old days move to Parquet, every row stays in exactly one place, and
every reader sees the same figures before and after."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.dataset
import pytest

from reconciler.cli.main import main
from reconciler.core.outcomes import SQL_DEGRADED, SQL_PASSES, SQL_RETRIED, SQL_RUNS
from reconciler.server.controllers.history import HistoryKeeper
from reconciler.sitebuild import SiteBuilder, build_site, queries
from reconciler.sitebuild.tables import Tables
from reconciler.store import days, reports
from reconciler.store.archive import DAY_SECONDS, source
from reconciler.store.db import Connection, open_state
from reconciler.store.handle import StateHandle
from tests.waiting import eventually, wait_for

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
DAYS = 40
CANARIES = ("web/shop", "web/api")
REGIONS = ("eu", "us")

# Every 20 minutes per canary and region for DAYS days up to NOW; 1 in 7 runs fails, latency
# varies by canary, region and minute (so quantiles and uptimes are not trivially equal).
GENERATE = """
INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
)
SELECT r || '-1', r, c || '@' || r || '-1', c, 'check', 'http',
       $end - INTERVAL (m * 20) MINUTE,
       10 + (hash(c, r, m) % 400) / 4.0,
       CASE WHEN hash(m, c, r) % 7 = 0 THEN 'fail' ELSE 'pass' END,
       CASE WHEN hash(m, c, r) % 7 = 0 THEN 503 ELSE 200 END,
       CASE WHEN hash(m, c, r) % 7 = 0 THEN 'HTTP 503 it''s down' END,
       '{"ttfb_ms": 3.5}'::JSON,
       $end - INTERVAL (m * 20) MINUTE + INTERVAL 2 SECOND
FROM unnest($canaries::VARCHAR[]) c(c), unnest($regions::VARCHAR[]) r(r),
     range(1, $runs) t(m)
"""


def generate(connection: Connection, end: datetime = NOW, days: int = DAYS) -> None:
    connection.execute(
        GENERATE,
        {
            "end": end,
            "canaries": list(CANARIES),
            "regions": list(REGIONS),
            "runs": days * 72 + 1,
        },
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.duckdb"
    connection = open_state(path)
    assert connection is not None
    generate(connection)
    connection.close()
    yield path


def reconcile(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def figures(path: Path) -> dict[str, object]:
    """What the read API reports over 7, 40 and 365 days, per canary and region."""
    connection = open_state(path, read_only=True)
    assert connection is not None
    with connection:
        seen: dict[str, object] = {}
        for canary in CANARIES:
            for days in (7, 40, 365):
                since, until = NOW - timedelta(days=days), NOW + timedelta(minutes=1)
                for region in (None, *REGIONS):
                    key = f"{canary} {days}d {region}"
                    seen[key + " uptime"] = reports.uptime(connection, canary, since, until, region)
                    seen[key + " latency"] = reports.latency(
                        connection, canary, since, until, region, 6 * 3600
                    )
                    # Whole-day buckets over a long range: read off the per-day histograms.
                    seen[key + " daily latency"] = reports.latency(
                        connection, canary, since, until, region, DAY_SECONDS
                    )
                seen[f"{canary} {days}d regions"] = reports.region_summaries(
                    connection, canary, since, until, None
                )
            oldest = (NOW - timedelta(days=DAYS + 1), NOW - timedelta(days=38))
            seen[f"{canary} oldest"] = reports.recent_results(connection, canary, *oldest, None, 5)
        return seen


def live_and_archived(path: Path) -> tuple[int, int, int]:
    """Rows in the live table, rows in the listed files, rows through the view."""
    connection = open_state(path, read_only=True)
    assert connection is not None
    with connection:
        live = connection.execute("SELECT count(*) FROM results").fetchone()
        listed = connection.execute("SELECT coalesce(sum(rows), 0) FROM archive_files").fetchone()
        both = connection.execute("SELECT count(*) FROM results_all").fetchone()
    assert live and listed and both
    return int(live[0]), int(listed[0]), int(both[0])


def test_old_days_move_to_parquet_and_every_figure_stays_the_same(state: Path) -> None:
    before = figures(state)
    total = sum(live_and_archived(state)[:2])
    code, out, err = reconcile("results", "archive", "--state", str(state))
    assert code == 0, err
    assert "archived 6 day(s)" in out or "archived 5 day(s)" in out, out
    live, archived, both = live_and_archived(state)
    assert archived > 0 and live + archived == total == both
    history = state.with_name("state.duckdb.history")
    files = sorted(p.relative_to(history).as_posix() for p in history.rglob("*.parquet"))
    assert files and all(
        f.startswith("day=") and "/region=" in f and f.split("/")[-1].startswith("part-")
        for f in files
    )
    assert {f.split("/")[1] for f in files} == {"region=eu", "region=us"}
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        oldest_live = connection.execute("SELECT min(started_at) FROM results").fetchone()
    assert oldest_live and oldest_live[0] >= (NOW - timedelta(days=36)).replace(hour=0, minute=0)
    assert figures(state) == before
    year = before["web/shop 365d None daily latency"]
    assert isinstance(year, dict) and year["quantiles"] == "histogram"
    assert year["quantile_error"] == 0.02 and len(year["series"]) == DAYS + 1

    # Another engine (here plain DuckDB, no state file) reads the directory as Hive partitions.
    plain = duckdb.connect()
    counted = plain.execute(
        f"""SELECT count(*), count(DISTINCT region), min(day) < max(day)
            FROM read_parquet('{history}/*/*/*.parquet', hive_partitioning = true)"""
    ).fetchone()
    assert counted == (archived, 2, True)

    # pyarrow reads the layout as Hive partitions too (docs/history.md says so).
    dataset = pyarrow.dataset.dataset(history, format="parquet", partitioning="hive")
    assert dataset.count_rows() == archived
    assert {"day", "region"} <= set(dataset.schema.names)

    # The monthly query docs/history.md shows, on the same directory.
    documented = Path(__file__).parent.parent / "docs" / "history.md"
    query = documented.read_text().split("```sql\n", 1)[1].split("```", 1)[0]
    monthly = plain.execute(query.replace("state.duckdb.history", str(history))).fetchall()
    assert {row[0] for row in monthly} == set(CANARIES)
    assert sum(row[2] for row in monthly) == archived
    assert all(80 < row[3] < 90 and row[4] > 10 for row in monthly)  # 1 run in 7 fails


def test_late_rows_for_an_archived_day_get_a_file_of_their_own(state: Path) -> None:
    assert reconcile("results", "archive", "--state", str(state))[0] == 0
    late = NOW - timedelta(days=DAYS - 1, minutes=7)
    connection = open_state(state)
    assert connection is not None
    with connection:
        connection.execute(
            """INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
) VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check',
               'http', $at, 12.5, 'pass', 200, NULL, NULL, $at)""",
            {"at": late},
        )
    before = live_and_archived(state)
    code, out, _ = reconcile("results", "archive", "--state", str(state))
    assert code == 0 and "archived 1 day(s), 1 results in 1 file(s)" in out
    live, archived, both = live_and_archived(state)
    assert (live, archived, both) == (before[0] - 1, before[1] + 1, before[2])
    day = state.with_name("state.duckdb.history") / f"day={late.date().isoformat()}/region=eu"
    assert len(list(day.glob("part-*.parquet"))) == 2


def test_history_older_than_its_age_is_deleted(state: Path) -> None:
    code, out, err = reconcile(
        "results", "archive", "--state", str(state), "--archive-after", "30d",
        "--delete-after", "35d",
    )  # fmt: skip
    assert code == 0, err
    assert "deleted 6 day(s) of history" in out or "deleted 5 day(s) of history" in out, out
    history = state.with_name("state.duckdb.history")
    days = sorted(p.name for p in history.iterdir())
    oldest = (NOW - timedelta(days=35)).date().isoformat()
    assert days and days[0] >= f"day={oldest}"
    live, archived, both = live_and_archived(state)
    assert live + archived == both
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        first = connection.execute("SELECT min(started_at) FROM results_all").fetchone()
        tier = connection.execute("SELECT min(day), count(*) FROM result_days").fetchone()
    assert first and first[0] >= NOW - timedelta(days=36)
    # The per-day tier keeps the archived days still held, and no deleted one.
    assert tier and tier[1] > 0 and tier[0] == first[0].timestamp() // DAY_SECONDS

    code, _, err = reconcile(
        "results", "archive", "--state", str(state), "--archive-after", "30d",
        "--delete-after", "20d",
    )  # fmt: skip
    assert code == 1 and "keep history at least as long as the archive age" in err
    assert "history kept for 20 days would delete days still live (archive age 30 days)" in err


def test_export_writes_live_and_archived_rows_in_the_same_layout(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reconcile("results", "archive", "--state", str(state))[0] == 0
    since, until = (NOW - timedelta(days=38)).date(), (NOW - timedelta(days=30)).date()
    out = tmp_path / "export"
    code, printed, err = reconcile(
        "results", "export", "--state", str(state), "--since", since.isoformat(),
        "--until", until.isoformat(), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    expected = 8 * 72 * len(CANARIES) * len(REGIONS)  # 8 whole days, every 20 minutes
    assert f"exported {expected:,} results" in printed
    plain = duckdb.connect()
    days = plain.execute(
        f"""SELECT count(DISTINCT day), count(*) FROM
            read_parquet('{out}/*/*/*.parquet', hive_partitioning = true)"""
    ).fetchone()
    assert days == (8, expected)

    code, _, err = reconcile(
        "results", "export", "--state", str(state), "--since", since.isoformat(),
        "--until", until.isoformat(), "--out", str(out),
    )  # fmt: skip
    assert code == 1 and "is not empty" in err
    with pytest.raises(SystemExit) as usage:
        reconcile(
            "results", "export", "--state", str(state), "--since", "yesterday", "--until", "x",
            "--out", str(tmp_path / "other"),
        )  # fmt: skip
    assert usage.value.code == 1 and "expected a date (2026-11-01)" in capsys.readouterr().err


def test_a_site_built_from_scratch_reads_archived_days(state: Path, tmp_path: Path) -> None:
    def windows() -> list[tuple[object, ...]]:
        connection = open_state(state)
        assert connection is not None
        with connection:
            build_site(connection, tmp_path / "site", NOW, temporary=True)
            return connection.execute(
                "SELECT win, parent, region, runs, passes FROM temp.site_window ORDER BY ALL"
            ).fetchall()

    before = windows()
    code, _, err = reconcile("results", "archive", "--state", str(state), "--archive-after", "3d")
    assert code == 0, err
    assert windows() == before
    assert any(row[0] == "30d" and row[3] > 30 * 72 - 10 for row in before)


@pytest.mark.slow
def test_archiving_killed_at_any_moment_leaves_every_row_in_one_place(tmp_path: Path) -> None:
    """`kill -9` of `reconcile results archive` after its 1st, 2nd … file: no row is lost or
    counted twice, then or after the next run (which removes the orphaned files)."""
    path = tmp_path / "state.duckdb"
    connection = open_state(path)
    assert connection is not None
    with connection:
        for chunk in range(6):  # more rows per day, so a day takes a while to move
            generate(connection, NOW - timedelta(seconds=chunk * 97), days=DAYS)
    total = sum(live_and_archived(path)[:2])
    history = path.with_name("state.duckdb.history")
    command = [sys.executable, "-m", "reconciler", "results", "archive", "--state", str(path)]
    interrupted = 0
    for files in (1, 4, 9):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(
                lambda n=files, c=child: (
                    c.poll() is not None  # type: ignore[misc]
                    or len(list(history.glob("*/*/*.parquet"))) >= n
                ),
                30,
                f"{files} files written",
            )
        finally:
            interrupted += child.poll() is None
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        live, archived, both = live_and_archived(path)
        assert live + archived == total == both, files
    assert interrupted == 3  # each kill stopped a run half way
    code, _, err = reconcile("results", "archive", "--state", str(path))
    assert code == 0, err
    live, archived, both = live_and_archived(path)
    assert live + archived == total == both
    on_disk = (
        duckdb.connect()
        .execute(f"SELECT count(*) FROM read_parquet('{history}/*/*/*.parquet')")
        .fetchone()
    )
    assert on_disk == (archived,)  # no orphaned file left to be read twice by another engine


@pytest.mark.anyio
async def test_the_server_moves_old_days_and_keeps_going_after_a_failure(
    state: Path, tmp_path: Path
) -> None:
    """The server's hourly run: old days leave the state file while it is held open, and
    a run that fails (the history directory cannot be created) is counted, not fatal."""
    handle = StateHandle(state)
    try:
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        failing = HistoryKeeper(
            handle, lambda: NOW, blocked / "history", timedelta(days=35), None, interval=0.01
        )
        await failing.start(first_run_after=0)
        await eventually(lambda: failing.failures >= 2, 10, "two failed runs")
        await failing.stop()
        assert failing.runs == 0

        keeper = HistoryKeeper(handle, lambda: NOW, tmp_path / "history", timedelta(days=35), None)
        report = await keeper.run_once()
        assert len(report.days_moved) in (5, 6) and report.rows_moved > 0
        until = NOW + timedelta(minutes=1)
        uptime = await handle.read(
            lambda c: reports.uptime(c, "web/shop", NOW - timedelta(days=DAYS + 1), until, None)
        )
        assert uptime["total"] == DAYS * 72 * len(REGIONS)  # live and archived alike
    finally:
        handle.close()


def test_archive_and_export_refuse_what_they_cannot_use(state: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    code, _, err = reconcile("results", "archive", "--state", str(missing))
    assert code == 1 and "does not exist yet" in err and not missing.exists()
    plain = tmp_path / "a-file"
    plain.write_text("")
    code, _, err = reconcile(
        "results", "export", "--state", str(state), "--since", "2026-01-01",
        "--until", "2026-02-01", "--out", str(plain),
    )  # fmt: skip
    assert code == 1 and "is not a directory" in err
    code, _, err = reconcile("results", "archive", "--state", str(state), "--history", str(plain))
    assert code == 1 and "cannot create history directory" in err


def raw_uptime(path: Path, canary: str, since: datetime, until: datetime) -> tuple[int, int]:
    """Runs and passes of a canary in [since, until), counted from every raw row."""
    connection = open_state(path, read_only=True)
    assert connection is not None
    with connection:
        row = connection.execute(
            """SELECT count(*) FILTER (WHERE NOT coalesce(maintenance, false)),
                      count(*) FILTER (WHERE status IN ('pass', 'degraded')
                                       AND NOT coalesce(maintenance, false))
               FROM """
            + source(connection, since, until)
            + " WHERE parent = $p AND started_at >= $s AND started_at < $u",
            {"p": canary, "s": since, "u": until},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def tier_rows(path: Path) -> list[tuple[object, ...]]:
    connection = open_state(path, read_only=True)
    assert connection is not None
    with connection:
        return connection.execute("SELECT * FROM result_days ORDER BY ALL").fetchall()


@pytest.fixture
def long_state(tmp_path: Path) -> Iterator[Path]:
    """130 days of results: longer than the 90-day window, shorter than the year."""
    path = tmp_path / "state.duckdb"
    connection = open_state(path)
    assert connection is not None
    generate(connection, days=130)
    # Some runs in maintenance and some degraded: the tier follows core/outcomes.py.
    connection.execute(
        """UPDATE results SET maintenance = true
           WHERE started_at < $end - INTERVAL 100 DAY AND hash(started_at) % 5 = 0""",
        {"end": NOW},
    )
    connection.execute(
        "UPDATE results SET status = 'degraded' WHERE status = 'pass' AND hash(started_at) % 9 = 0"
    )
    connection.close()
    yield path


def test_90_and_365_day_windows_on_the_pages_equal_the_raw_rows(
    long_state: Path, tmp_path: Path
) -> None:
    def shown() -> dict[tuple[str, str], tuple[int, int]]:
        connection = open_state(long_state)
        assert connection is not None
        with connection:
            build_site(connection, tmp_path / "site", NOW)
            found = queries.window_figures(connection, Tables())
        return {
            (window, canary): (figure.runs, figure.passes)
            for (window, canary, region), figure in found.items()
            if region is None and window in ("90d", "365d")
        }

    today = NOW.replace(hour=0, minute=0)
    expected = {
        (name, canary): raw_uptime(
            long_state, canary, today - timedelta(days=length - 1), NOW + timedelta(minutes=1)
        )
        for name, length in (("90d", 90), ("365d", 365))
        for canary in CANARIES
    }
    assert expected[("90d", "web/shop")][0] < expected[("365d", "web/shop")][0]
    assert shown() == expected

    # Archived, and with a late run for a day of the 90-day window: the same, plus it.
    assert reconcile("results", "archive", "--state", str(long_state))[0] == 0
    late = today - timedelta(days=60, minutes=-7)
    connection = open_state(long_state)
    assert connection is not None
    with connection:
        connection.execute(
            """INSERT INTO results (agent, region, canary, parent, check_name, check_type,
                                   started_at, duration_ms, status, received_at)
               VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check', 'http', $at, 9.0,
                       'fail', $received)""",
            # Received after every generated row, on the test's clock rather than the real
            # one (which may be earlier than the newest generated row's arrival).
            {"at": late, "received": NOW + timedelta(minutes=1)},
        )
    for name in ("90d", "365d"):
        runs, passes = expected[(name, "web/shop")]
        expected[(name, "web/shop")] = (runs + 1, passes)
    assert shown() == expected


def test_the_per_day_tier_survives_archiving_and_a_restart(state: Path) -> None:
    code, out, err = reconcile("results", "archive", "--state", str(state))
    assert code == 0, err
    # The first run meets a state file without the tier: it is backfilled, with progress.
    moved = int(out.split("archived ")[-1].split(" day(s)")[0])
    assert moved >= 5 and err.count("per-day tier: ") == moved, err
    filled = tier_rows(state)
    assert {row[0] for row in filled} == set(CANARIES)
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        known = days.until(connection)
    assert known == (NOW - timedelta(days=35)).timestamp() // DAY_SECONDS

    # Reopened (a restart) and archived again: the same rows, nothing written again.
    code, _, err = reconcile("results", "archive", "--state", str(state))
    assert code == 0 and "per-day tier" not in err
    assert tier_rows(state) == filled

    # Runs, passes and p95 are those of the raw rows, archived or not.
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        mismatched = connection.execute(
            """SELECT count(*) FROM result_days t FULL JOIN (
                   SELECT parent, region, check_name,
                          (epoch_us(started_at) // 86400000000)::INTEGER AS day, count(*) AS runs,
                          count(*) FILTER (WHERE status = 'pass') AS passes,
                          quantile_cont(duration_ms, 0.95) AS p95
                   FROM results_all WHERE started_at < $today
                   GROUP BY ALL) r USING (parent, region, check_name, day)
               WHERE t.runs IS DISTINCT FROM r.runs OR t.passes IS DISTINCT FROM r.passes
                  OR t.p95 IS DISTINCT FROM r.p95 OR len(t.bins) <> len(t.counts)
                  OR list_sum(t.counts) <> t.runs""",
            {"today": datetime.fromtimestamp(known * DAY_SECONDS, UTC)},
        ).fetchone()
    assert mismatched == (0,)

    # A state file whose archived days predate the tier gets it once, from the files.
    connection = open_state(state)
    assert connection is not None
    with connection:
        connection.execute("DELETE FROM result_days")
        connection.execute("DELETE FROM meta WHERE key LIKE 'days_%'")
    code, _, err = reconcile("results", "archive", "--state", str(state))
    assert code == 0 and err.count("per-day tier: ") == moved
    assert tier_rows(state) == filled

    # The site fills the days after them, and reads them all.
    with open_state(state) as connection:
        build_site(connection, state.parent / "site", NOW)
        assert days.until(connection) == NOW.timestamp() // DAY_SECONDS
        held = connection.execute("SELECT count(DISTINCT day) FROM result_days").fetchone()
    assert held == (DAYS,)


def test_the_365_day_figure_reads_the_tier_and_equals_the_raw_rows(state: Path) -> None:
    since, until = NOW - timedelta(days=365), NOW + timedelta(minutes=1)
    with open_state(state) as connection:
        # Slow and retried runs are counted apart (core/outcomes.py), by the tier too.
        connection.execute(
            "UPDATE results SET status = 'degraded' "
            "WHERE status = 'pass' AND hash(started_at) % 9 = 0"
        )
        connection.execute("UPDATE results SET retries = 1 WHERE hash(started_at) % 11 = 0")
        counted = connection.execute(
            f"""SELECT {SQL_RUNS}, {SQL_PASSES}, {SQL_DEGRADED}, {SQL_RETRIED} FROM results
                WHERE parent = 'web/shop'"""
        ).fetchone()
    assert counted is not None and counted[2] > 0 and counted[3] > 0
    raw = dict(zip(("total", "passed", "degraded", "retried"), counted, strict=True))
    assert reconcile("results", "archive", "--state", str(state))[0] == 0
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        assert days.until(connection) > 0  # the whole days below come from the tier
        whole = reports.uptime(connection, "web/shop", since, until, None)
        assert {key: whole[key] for key in raw} == raw
        year = reports.uptime(connection, "web/shop", since, until, "eu")
        latency = reports.latency(connection, "web/shop", since, until, None, DAY_SECONDS)
        exact = connection.execute(
            """SELECT quantile_cont(duration_ms, [0.5, 0.95, 0.99]) FROM results_all
               WHERE parent = 'web/shop'"""
        ).fetchone()
    eu = raw_uptime(state, "web/shop", since, until)
    assert (year["total"], year["passed"]) != eu  # one region of two
    assert year["total"] == DAYS * 72 and year["checks"][0]["total"] == year["total"]
    assert exact is not None
    for key, value in zip(("p50", "p95", "p99"), exact[0], strict=True):
        assert abs(latency[key] - value) <= 0.02 * value, (key, latency[key], value)


def test_a_server_backfills_the_tier_a_few_days_a_build(tmp_path: Path) -> None:
    """A server's builds (staging ahead) write 5 days of the tier each; the long windows
    wait for the tier to hold every day they cover, then show the raw rows' figures."""
    path = tmp_path / "state.duckdb"
    with open_state(path) as connection:
        generate(connection, days=12)
        builder = SiteBuilder(tmp_path / "site", stage_ahead=True)
        shown = []
        for minute in range(4):
            builder.build(connection, NOW + timedelta(minutes=minute))
            held = connection.execute("SELECT count(DISTINCT day) FROM result_days").fetchone()
            shown.append(
                (held[0] if held else 0, sorted(queries.window_states(connection, Tables())))
            )
        figures_ = queries.window_figures(connection, Tables())
    long = ["24h", "30d", "365d", "7d", "90d"]
    assert shown == [(5, ["24h", "30d", "7d"]), (10, ["24h", "30d", "7d"]), (12, long), (12, long)]
    today = NOW.replace(hour=0, minute=0)
    runs, passes = raw_uptime(
        path, "web/api", today - timedelta(days=364), NOW + timedelta(hours=1)
    )
    year = figures_[("365d", "web/api", None)]
    assert (year.runs, year.passes) == (runs, passes)


def test_a_servers_first_build_of_a_day_leaves_yesterday_to_the_tier_between_builds(
    tmp_path: Path,
) -> None:
    """Writing yesterday into the per-day tier (a day of raw rows) is not done in a server's
    first build of the day: `stage_ahead` does it after that build, and the long windows
    move onto it minutes later as they would have."""
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    with open_state(tmp_path / "state.duckdb") as connection:
        generate(connection, end=midnight - timedelta(minutes=5), days=3)
        server = SiteBuilder(tmp_path / "site", stage_ahead=True)

        def held() -> int:
            return days.until(connection)

        yesterday = int(midnight.timestamp()) // DAY_SECONDS - 1
        for moment in (midnight - timedelta(minutes=2), midnight - timedelta(minutes=1)):
            server.build(connection, moment)
            server.stage_ahead(connection, moment)
        assert held() == yesterday  # the days before yesterday
        server.build(connection, midnight + timedelta(seconds=30))
        assert held() == yesterday  # not in the day's first build
        server.stage_ahead(connection, midnight + timedelta(seconds=30))
        assert held() == yesterday + 1  # between builds
        stored = connection.execute(
            "SELECT sum(runs) FROM result_days WHERE day = $d", {"d": yesterday}
        ).fetchone()
        assert stored is not None and stored[0] > 0
        # A builder nothing stages ahead for (a first build, or a caller that never does)
        # writes the new days in its builds.
        alone = SiteBuilder(tmp_path / "alone", stage_ahead=True)
        connection.execute("DELETE FROM result_days WHERE day = $d", {"d": yesterday})
        connection.execute("UPDATE meta SET value = $v WHERE key = 'days_until'", {"v": yesterday})
        alone.build(connection, midnight + timedelta(minutes=1))
        assert held() == yesterday + 1


def test_the_tiers_new_and_late_days_are_written_apart_and_no_late_row_is_lost(
    tmp_path: Path,
) -> None:
    """A server writes the tier's late days in its builds and its new days between them:
    each call moves only its own watermark, so a late row received in between is still
    found by the next call for late days."""
    path = tmp_path / "state.duckdb"
    with open_state(path) as connection:
        generate(connection, days=4)
        today = int(NOW.timestamp()) // DAY_SECONDS
        assert days.fill(connection, NOW) == [today - 4, today - 3, today - 2, today - 1]
        late_day = today - 2
        insert = """INSERT INTO results (agent, region, canary, parent, check_name,
                        check_type, started_at, duration_ms, status, received_at)
                    VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check', 'http', $at,
                            5.0, 'pass', $received)"""
        at = datetime.fromtimestamp(late_day * DAY_SECONDS + 3600, UTC)
        connection.execute(insert, {"at": at, "received": NOW + timedelta(minutes=1)})
        tomorrow = NOW + timedelta(days=1)
        # New days only: today is written, the late day is not, and stays late.
        assert days.fill(connection, tomorrow, late=False) == [today]
        assert days.until(connection) == today + 1
        # Late days only: it is written now, and its run counted.
        assert days.fill(connection, tomorrow, new=False) == [late_day]
        assert days.fill(connection, tomorrow, new=False) == []
        runs = connection.execute(
            "SELECT sum(runs) FROM result_days WHERE day = $d AND parent = 'web/shop'",
            {"d": late_day},
        ).fetchone()
    start = datetime.fromtimestamp(late_day * DAY_SECONDS, UTC)
    assert runs == (raw_uptime(path, "web/shop", start, start + timedelta(days=1))[0],)
