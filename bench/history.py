"""Benchmark results history: days archived to Parquet, long-window figures read through both.

    .venv/bin/python bench/history.py                       # 1,000 canaries x 5 regions, 400 days
    .venv/bin/python bench/history.py --days 60             # quicker: 25 days archived
    .venv/bin/python bench/history.py --keep /tmp/history-bench

Steps:

1. Generate a config repository (5 regions, one agent each, 1,000 canaries on every agent),
   commit it and apply it (`reconcile apply`, in-process).
2. Day by day, oldest first, insert one run per derived canary every 5 minutes (1.44 M rows
   a day at the default shape; 576 M over 400 days) and, as soon as a day is older than the
   archive age (35 days), archive it (`store.archive.archive`, what `serve` runs hourly and
   `reconcile results archive` runs now): the time of each day's move is one sample of
   "archive one day".
   Each finished day also goes to the per-day tier (`store/days.py`) as a server's first build
   after midnight would write it: timed too.
3. Time, on the state left (35 days live, the rest in Parquet): the uptime and p50/p95/p99
   of one canary over 30, 90, 180 and 365 days as the read API computes them (first query
   after opening the state, then again; 365 days whatever `--days`); a full site build; a
   rebuild after one more minute (after one untimed minute's build, as a server rebuilding
   every minute has spare files to write pages into); the first build a day later.
4. Print the Parquet size on disk and the state file's size.

Targets (issue "Results kept for years"): 365-day figure <= 1 s, archiving a day <= 10 s,
rebuild after one more minute <= 2 s, full build with 90 d / 365 d windows and monthly pages
<= 30 s. Also printed (no target): the first build of the next day (the per-day tier gets the
finished day, the 90 d / 365 d windows move by a day) and the time to write one finished day
to the per-day tier (what that build pays for it, median over the generated days).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet import INSERT, SERIES, say, write_repo
from harness import add_keep_option, timed, workspace

from reconciler.cli.main import main as reconcile
from reconciler.sitebuild import SiteBuilder
from reconciler.store import days as tier
from reconciler.store import reports
from reconciler.store.archive import DAY_SECONDS, archive
from reconciler.store.db import Connection, open_state

DAY_TARGET, FIGURE_TARGET, REBUILD_TARGET, FULL_TARGET = 10.0, 1.0, 2.0, 30.0
ARCHIVE_AFTER = timedelta(days=35)


def figure(connection: Connection, parent: str, now: datetime, days: int) -> dict[str, object]:
    """Uptime and quantiles of one canary over `days`, as `GET /api/v1/canaries/...` reads them."""
    since = now - timedelta(days=days)
    return {
        "uptime": reports.uptime(connection, parent, since, now, None)["uptime"],
        "latency": {
            key: value
            for key, value in reports.latency(
                connection, parent, since, now, None, DAY_SECONDS
            ).items()
            if key != "series"
        },
    }


def verdict(seconds: float, target: float) -> str:
    return "PASS" if seconds <= target else "MISS"


def run(args: argparse.Namespace, root: Path) -> None:
    repo, state, history, out = (
        root / "config",
        root / "state.duckdb",
        root / "history",
        root / "site",
    )
    write_repo(repo, args.regions, args.canaries)
    applied = reconcile(
        ["apply", "--repo", str(repo), "--state", str(state), "--auto-approve", "-q"],
        out=io.StringIO(),
        err=io.StringIO(),
    )
    if applied != 0:
        raise SystemExit("bench: applying the generated config failed")
    per_day = args.canaries * args.regions * 1440 // args.period
    say(f"{args.days} days x {per_day:,} rows a day = {args.days * per_day:,} rows")

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    now = midnight + timedelta(hours=12, minutes=7)
    end_minute = int(now.timestamp()) // 60
    first_day = (end_minute - args.days * 1440) // 1440
    connection = open_state(state)
    assert connection is not None
    connection.execute(SERIES)
    moves: list[float] = []
    fills: list[float] = []
    started = time.perf_counter()
    for day in range(first_day, end_minute // 1440 + 1):
        lower, upper = (
            max(day * 1440, end_minute - args.days * 1440),
            min((day + 1) * 1440, end_minute),
        )
        connection.execute(
            INSERT, {"lo": lower, "hi": upper, "outage": end_minute + 1, "step": args.period}
        )
        # As the server's first build after midnight would, the finished day goes to the
        # per-day tier.
        finished = datetime.fromtimestamp((day + 1) * DAY_SECONDS + 60, UTC)
        if finished <= now:
            fills.append(timed(lambda f=finished: tier.fill(connection, f))[0])
        # As the server would, the day is archived once it is older than the archive age.
        clock = datetime.fromtimestamp((day + 1) * DAY_SECONDS, UTC) + ARCHIVE_AFTER
        if clock <= now:
            seconds, report = timed(lambda c=clock: archive(connection, history, c, ARCHIVE_AFTER))
            moves.append(seconds)
            if len(moves) % 10 == 1:
                say(
                    f"  day {len(moves)} archived: {report.rows_moved:,} rows in "
                    f"{report.files_written} files, {seconds:.2f}s "
                    f"({time.perf_counter() - started:.0f}s so far)"
                )
    connection.execute("CHECKPOINT")
    connection.close()
    parquet = sum(p.stat().st_size for p in history.rglob("*.parquet"))
    files = sum(1 for _ in history.rglob("*.parquet"))
    say(f"generated and archived in {time.perf_counter() - started:.0f}s")

    connection = open_state(state)
    assert connection is not None
    connection.execute(SERIES)
    parent = connection.execute(
        "SELECT parent FROM resources WHERE kind = 'DerivedCanary' ORDER BY parent LIMIT 1"
    ).fetchone()
    assert parent is not None
    results: list[tuple[str, float, float | None]] = []
    for days in (30, 90, 180, 365):
        # The 365-day figure is timed whatever --days: the range is a year either way.
        if days > args.days and days != 365:
            continue
        cold, _ = timed(lambda d=days: figure(connection, parent[0], now, d))
        warm, shown = timed(lambda d=days: figure(connection, parent[0], now, d))
        say(f"  {days}-day figure: {shown}")
        target = FIGURE_TARGET if days == 365 else None
        results.append((f"{days}-day uptime + p50/p95/p99, first query", cold, target))
        results.append((f"{days}-day uptime + p50/p95/p99, again", warm, target))
    # As the server builds: between builds, `stage_ahead` moves windows and fills the SLA
    # months in (a month at a time, newest first, the first ones too).
    builder = SiteBuilder(out, workers=2, stage_ahead=True)
    full, report = timed(lambda: builder.build(connection, now))
    say(f"  full build phases: {report.timings}")
    results.append(("full site build (24 h ... 365 d windows, SLA)", full, FULL_TARGET))
    ahead, _ = timed(lambda: builder.stage_ahead(connection, now))
    say(f"  between builds (stage_ahead, one more SLA month): {ahead:.2f}s")
    drawing, drawn = timed(builder.draw_ahead)
    say(f"  between builds (draw_ahead, that month's SLA pages): {drawn} in {drawing:.2f}s")
    tidied, _ = timed(builder.tidy)
    say(f"  between builds (tidy: the build's objects freed, collected): {tidied:.2f}s")
    settled, _ = timed(builder.publisher.settle)
    say(f"  between builds (the version before retired, spares made up): {settled:.2f}s")
    # One untimed minute first, as a server rebuilding every minute would have built: the
    # first rebuild after a full build has no spare files to write its pages into (they
    # come from the version a build retires), and creates thousands of files.
    connection.execute(
        INSERT, {"lo": end_minute, "hi": end_minute + 1, "outage": end_minute + 1, "step": 1}
    )
    later = now + timedelta(minutes=1)
    builder.build(connection, later)  # the same builder: the server keeps one
    builder.stage_ahead(connection, later)
    builder.draw_ahead()
    builder.tidy()
    builder.publisher.settle()  # a minute passes on a server: the version before is retired
    end_minute += 1
    connection.execute(
        INSERT, {"lo": end_minute, "hi": end_minute + 1, "outage": end_minute + 1, "step": 1}
    )
    later += timedelta(minutes=1)
    rebuild, again = timed(lambda: builder.build(connection, later))
    say(f"  rebuild phases: {again.timings}")
    builder.tidy()
    results.append(("rebuild after one more minute", rebuild, REBUILD_TARGET))
    # The day after: the tier gets today, the 90 d / 365 d windows move (once a day).
    tomorrow = now + timedelta(days=1)
    connection.execute(
        INSERT, {"lo": end_minute + 1, "hi": end_minute + 1440, "outage": end_minute + 1,
                 "step": args.period},
    )  # fmt: skip
    next_day, moved = timed(
        lambda: SiteBuilder(out, workers=2, stage_ahead=True).build(connection, tomorrow)
    )
    say(f"  next day's first build phases: {moved.timings}, windows moved: {moved.windows}")
    results.append(("first build of a day (tier + 90 d / 365 d move)", next_day, None))
    if fills:
        results.append(
            ("per-day tier: write one finished day, median", statistics.median(fills), None)
        )
    if moves:
        results.append(("archive one day, median", statistics.median(moves), DAY_TARGET))
        results.append(("archive one day, slowest", max(moves), DAY_TARGET))
    live = connection.execute("SELECT count(*) FROM results").fetchone()
    connection.close()

    print(
        f"\nresults history, {args.canaries} canaries x {args.regions} regions, a run every "
        f"{args.period} min for {args.days} days = {args.days * per_day:,} rows; "
        f"{len(moves)} days archived"
    )
    print(f"{'case':<52} {'seconds':>8}  target  result")
    for label, seconds, target in results:
        limit = f"<= {target:>4.0f}" if target is not None else "      -"
        shown = verdict(seconds, target) if target is not None else "info"
        print(f"{label:<52} {seconds:>8.2f}  {limit}  {shown}")
    print(
        f"\nParquet: {files:,} files, {parquet / 2**30:.2f} GiB "
        f"({parquet / max(1, len(moves) * per_day):.1f} bytes a row); state file "
        f"{state.stat().st_size / 2**30:.2f} GiB holding {live[0] if live else 0:,} live rows"
    )
    print(f"full build: {report.published.rendered} pages rendered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--regions", type=int, default=5)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--period", type=int, default=5, help="minutes between runs (default 5)")
    add_keep_option(parser)
    args = parser.parse_args()
    if args.days <= ARCHIVE_AFTER.days:
        sys.exit(f"bench: --days must be more than {ARCHIVE_AFTER.days} to archive anything")
    with workspace(args.keep, "history-bench-") as directory:
        run(args, directory)


if __name__ == "__main__":
    main()
