"""Benchmark the status site: a full build over ~50M results, then rebuilds minute by minute.

    .venv/bin/python bench/site.py                         # 1,000 canaries x 5 regions x 7 days
    .venv/bin/python bench/site.py --canaries 200 --days 2 # quicker
    .venv/bin/python bench/site.py --workers 1             # render in one process
    .venv/bin/python bench/site.py --keep /tmp/site-bench  # keep the repo, state and site
    .venv/bin/python bench/site.py --profile 30 --workers 1  # cProfile one rebuild (top 30)

Steps:

1. Generate a config repository (5 regions, one agent each, 1,000 canaries on every agent with
   one HTTP check, two routes with canary blocks), commit it and apply it with
   `reconcile apply` (in-process), so the resources are the project's own.
2. Generate one-minute results for every derived canary over the days before the bench's
   clock with DuckDB SQL (`range` x the derived canaries, a day per statement; ~50M rows), plus
   a regional outage, an incident with a timeline and canary evaluations.
3. **Full build**: `SiteBuilder.build` on a fresh output directory (rollups from scratch, every
   page; as on a server, the SLA months are counted after it, by `stage_ahead`).
4. **Rebuilds**: insert one more minute of results, advance the clock a minute, rebuild with
   the builder of the full build, kept from build to build as the server keeps its own (it
   keeps stored rows that change only when a window moves, `sitebuild/kept.py`; a last,
   informational case rebuilds with a fresh `SiteBuilder`, as `reconcile site build` does on
   each run). Every canary runs every minute, so every rebuild after one more minute adds it
   to every canary's figures (the windows' open part) and draws every canary page. The
   minutes timed: the first, which
   catches up what the full build left to later builds (the per-day tier's last days, the 90-
   and 365-day windows published: informational, a server pays it once); one inside a 15-minute
   step; the minute the 24-hour window moves and the next one (its new figures published); a
   day's first minute (00:00: yesterday is written into the per-day tier); the
   same two minutes for 7 days (at midnight: the day's histogram is finished too) and for 30
   days; a rebuild after 8 minutes without one, which moves every window at once and publishes
   at once (informational); and a rebuild with nothing new. As the server does, each build is
   followed by `SiteBuilder.stage_ahead`, which computes a moved window's figures between
   builds and counts the SLA months (a month a call after the full build, then a new day),
   `SiteBuilder.draw_ahead`, which draws
   those months' pages, `SiteBuilder.tidy`, which draws the stored part of the charts of
   a window that moved (`chart_heads.py`), frees the build's objects and collects,
   and the end of the retiring of the version before, which the server's next build, a
   minute later, finds done (all printed apart, not in the builds' times);
   `--stage-with-build` computes them inside the build of the minute the window moved
   instead (a one-off `reconcile site build`).

Targets: full build <= 15 s, rebuild after one more minute <= 2 s; PASS or MISS is printed for
each, exit code 0.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from fleet import INSERT, generate, say, write_repo
from harness import add_keep_option, timed, workspace

from reconciler.cli.main import main as reconcile
from reconciler.sitebuild import Report, SiteBuilder
from reconciler.sitebuild.windows import SETTLE, WINDOWS, Window
from reconciler.store.db import open_state

FULL_TARGET, REBUILD_TARGET = 15.0, 2.0


def runtime_rows(connection: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """An incident with a timeline and a progressing canary run with evaluations."""
    parent = connection.execute("SELECT parent FROM bench_series WHERE id = 1").fetchone()
    assert parent is not None
    opened = now - timedelta(minutes=38)
    connection.execute("INSERT INTO incidents VALUES (1, ?, ?, NULL, 'open')", [parent[0], opened])
    connection.execute("INSERT INTO incident_timeline VALUES (1, ?, 'region-1', 'down')", [opened])
    runtime = (
        '{"step": 1, "weights": {"stable": 50, "canary": 50}, "consecutive_failures": 0, '
        '"reason": "step 2 holding"}'
    )
    connection.execute(
        "UPDATE canary_runs SET state = 'progressing', runtime = ?::JSON WHERE route = 'checkout'",
        [runtime],
    )
    detail = (
        '{"failed_rules": [], "canary_group": "canary", "baseline_group": "stable", '
        '"canary_requests": 420, "canary_errors": 2, "canary_error_rate": 0.0047, '
        '"canary_p99_ms": 310.0, "baseline_requests": 3800, "baseline_errors": 15, '
        '"baseline_error_rate": 0.0039, "baseline_p99_ms": 290.0, "error_rate_ratio": 1.2, '
        '"latency_ratio": 1.07, "error_rate_delta_pp": 0.08, "thresholds": {'
        '"error_threshold": 0.02, "latency_threshold_ms": 800.0, '
        '"max_error_rate_increase": 1.5, "max_latency_increase": 2.0, '
        '"max_error_rate_delta": null, "min_requests": 50}}'
    )
    for minutes in range(10):
        connection.execute(
            """INSERT INTO canary_evaluations
               SELECT id, route, ?, 1, 'pass', 'all rules pass', ?::JSON
               FROM canary_runs WHERE route = 'checkout'""",
            [now - timedelta(minutes=minutes), detail],
        )


def describe(report: Report) -> str:
    published = report.published
    phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in report.timings.items())
    windows = ",".join(report.windows) or "-"
    staged = ",".join(report.staged) or "-"
    return (
        f"{published.rendered} rendered, {published.written} written; windows published: "
        f"{windows}, staged: {staged}; phases (s): {phases}"
    )


def first_move(window: Window, since: datetime) -> timedelta:
    """How many whole minutes after `since` the window moves."""
    bounds = window.bounds(int(since.timestamp()))
    minutes = 1
    while window.bounds(int((since + timedelta(minutes=minutes)).timestamp())) == bounds:
        minutes += 1
    return timedelta(minutes=minutes)


def machine_ms() -> float:
    """How long a fixed piece of Python (dict updates and number formatting, as a build does
    by the hundred thousand) takes now, in ms: run before each timed build, it shows how fast
    the machine was then (on a shared machine, the same build takes 1.3-1.6 times as long in
    its slow periods)."""
    started = time.perf_counter()
    shown: dict[int, str] = {}
    for value in range(200_000):
        shown[value % 997] = f"{value:,}"
    return (time.perf_counter() - started) * 1000


def verdict(seconds: float, target: float | None) -> str:
    if target is None:
        return "info"
    return "PASS" if seconds <= target else "MISS"


def run(args: argparse.Namespace, root: Path) -> None:
    usage = shutil.disk_usage(root)
    rows = args.canaries * args.regions * args.days * 1440
    say(f"{rows:,} rows to generate; {usage.free / 2**30:.0f} GiB free under {root}")
    if usage.free < rows * 60:
        raise SystemExit(
            f"bench: not enough disk space under {root} (about {rows * 60 // 2**30} GiB)"
        )
    repo, state, out = root / "config", root / "state.duckdb", root / "site"
    write_repo(repo, args.regions, args.canaries)
    applied = reconcile(
        ["apply", "--repo", str(repo), "--state", str(state), "--auto-approve", "-q"],
        out=io.StringIO(),
        err=io.StringIO(),
    )
    if applied != 0:
        raise SystemExit("bench: applying the generated config failed")
    say(f"applied {args.canaries} canaries x {args.regions} regions")

    # The clock: 22:07 plus the settling delay, so that the 24-hour window is mid-step; the
    # data ends a minute before.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    now = midnight - timedelta(hours=2) + timedelta(seconds=SETTLE, minutes=7)
    end_minute = int(now.timestamp()) // 60
    connection = open_state(state)
    assert connection is not None
    started = time.perf_counter()
    generate(connection, end_minute - args.days * 1440, end_minute, end_minute - 40)
    runtime_rows(connection, now)
    connection.execute("CHECKPOINT")
    say(
        f"generated {rows:,} rows in {time.perf_counter() - started:.0f}s "
        f"({state.stat().st_size / 2**30:.1f} GiB)"
    )

    ahead: list[float] = []  # seconds of each build's staging ahead (after it, untimed)
    tidied: list[float] = []  # seconds of each build's tidying (after it, untimed)
    settled: list[float] = []  # seconds waited for the retiring of a version (untimed)
    # One builder for every build, as the server keeps one (`site_rebuilds.py`).
    builders = [SiteBuilder(out, workers=args.workers, stage_ahead=args.stage_ahead)]

    def build(moment: datetime) -> Report:
        return builders[-1].build(connection, moment)

    def after(moment: datetime) -> None:
        """What the server does between builds (not in the builds' times): stage the windows
        that moved, then draw the chart parts of windows that moved, free the build's objects
        and collect (`SiteBuilder.tidy`)."""
        builder = builders[-1]
        if args.stage_ahead:
            seconds, staged = timed(lambda: builder.stage_ahead(connection, moment))
            # SLA months counted (the first ones after the full build, then a day's): their
            # pages are left for `draw_ahead`.
            counted = ["SLA months"] if builder.ahead is not None else []
            if staged or counted:
                what = ",".join(staged + counted)
                say(f"  after the build, staged ahead: {what} in {seconds:.2f}s")
                ahead.append(seconds)
            seconds, drawn = timed(builder.draw_ahead)
            if drawn:
                pages_drawn = f"drew {drawn} SLA pages (months counted)"
                say(f"  after the build, {pages_drawn} in {seconds:.2f}s")
                ahead.append(seconds)
        tidied.append(timed(builder.tidy)[0])
        # The server's next build is a minute away: the version this one retired is gone by
        # then, and the spares are made up (`SiteDir.prune`).
        settled.append(timed(builder.publisher.settle)[0])

    say("full build (rollups from scratch, every page)")
    calibrated = machine_ms()
    full, report = timed(lambda: build(now))
    after(now)
    pages = report.published.pages
    say(f"  {full:.2f}s: {describe(report)}")
    results: list[tuple[str, float, float | None, Report, float]] = [
        ("full build", full, FULL_TARGET, report, calibrated)
    ]

    def add_minute() -> None:
        nonlocal now, end_minute
        connection.execute(
            INSERT, {"lo": end_minute, "hi": end_minute + 1, "outage": end_minute - 40, "step": 1}
        )
        end_minute += 1
        now += timedelta(minutes=1)

    # Each case: results arrive minute by minute up to `gap` minutes before the case (the
    # server would have rebuilt on its timer meanwhile: one untimed build), then the last
    # `gap` minutes arrive and the rebuild is timed. Windows move in minutes of their own
    # (windows.py): the 24 h window at :01, :16 …, 7 d three minutes after each 2-hour
    # boundary, 30 d eight minutes after; the build in which a window moves computes its
    # figures, the next one publishes them (moves.py). Every canary has a new run every minute,
    # so every build draws every canary page.
    origin = now
    profiled = False
    moves = [first_move(window, origin) for window in WINDOWS]
    minute = timedelta(minutes=1)
    midnight = (origin + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    cases: tuple[tuple[str, timedelta, int, float | None], ...] = (
        # Not the target either: the full build wrote the per-day tier's first days only (a
        # server's builder writes 5 a build, `TIER_DAYS_PER_BUILD`), so this one writes the
        # rest and publishes the 90- and 365-day windows, whose pages are all drawn. A
        # server pays it once, in its first builds on a state file. The next case, like every
        # other, comes after one untimed build (the one right after a catch-up still writes
        # thousands of new files: the spares come from the version it retires).
        ("rebuild, +1 minute, catching up the per-day tier", minute, 1, None),
        ("rebuild, +1 minute within a 15-minute step", 3 * minute, 1, REBUILD_TARGET),
        ("rebuild, +1 minute moving the 24 h window", moves[0], 1, REBUILD_TARGET),
        ("  next minute: its figures published", moves[0] + minute, 1, REBUILD_TARGET),
        # A day's first build: it writes yesterday into the per-day tier (`store/days.py`).
        ("rebuild, +1 minute, a day's first (00:00)", midnight - origin, 1, REBUILD_TARGET),
        ("rebuild, +1 minute moving 7 d (midnight)", moves[1], 1, REBUILD_TARGET),
        ("  next minute: its figures published", moves[1] + minute, 1, REBUILD_TARGET),
        ("rebuild, +1 minute moving 30 d", moves[2], 1, REBUILD_TARGET),
        ("  next minute: its figures published", moves[2] + minute, 1, REBUILD_TARGET),
        # Not the bench's target (one more minute): after 8 minutes without a build all three
        # windows move, and their figures are published at once: every page of the site.
        ("rebuild after 8 minutes, all windows move", moves[2] + timedelta(hours=2), 8, None),
    )
    for label, offset, gap, target in cases:
        if origin + offset - now > timedelta(minutes=gap):
            while now < origin + offset - timedelta(minutes=gap):
                add_minute()
            build(now)
            after(now)
        while now < origin + offset:
            add_minute()
        if args.profile and not profiled and target is not None:
            # The first timed case, once more a minute later (untimed): what a rebuild spends,
            # by function, in this process (render workers, with --workers 2, are not seen).
            calibrated = machine_ms()
            seconds, report = timed(lambda: build(now))
            say(f"{label}: {seconds:.2f}s: {describe(report)}")
            results.append((label, seconds, target, report, calibrated))
            add_minute()
            profiler = cProfile.Profile()
            profiler.runcall(build, now)
            after(now)
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
            stats.print_stats(args.profile)
            say(f"profile of the next minute's rebuild (cumulative):\n{text.getvalue()}")
            profiled = True
            continue
        calibrated = machine_ms()
        seconds, report = timed(lambda: build(now))
        after(now)
        say(f"{label}: {seconds:.2f}s: {describe(report)}")
        results.append((label, seconds, target, report, calibrated))
    calibrated = machine_ms()
    seconds, report = timed(lambda: build(now))
    after(now)
    say(f"rebuild, nothing new: {seconds:.2f}s: {describe(report)}")
    results.append(("rebuild, nothing new", seconds, REBUILD_TARGET, report, calibrated))
    # A one-off `reconcile site build` each minute: a fresh builder keeps nothing.
    add_minute()
    builders.append(SiteBuilder(out, workers=args.workers, stage_ahead=args.stage_ahead))
    calibrated = machine_ms()
    seconds, report = timed(lambda: build(now))
    say(f"rebuild, +1 minute, a fresh builder: {seconds:.2f}s: {describe(report)}")
    results.append(("rebuild, +1 minute, a fresh builder", seconds, None, report, calibrated))
    # Its retiring thread makes up spares; left running, it wrote them again after the
    # workspace was removed (a hundred megabytes left in /tmp a run).
    builders[-1].publisher.settle()
    connection.close()

    print(
        f"\nstatus site, {args.canaries} canaries x {args.regions} regions x {args.days} days "
        f"= {rows:,} results, {pages:,} pages, {args.workers} render worker(s)"
    )
    print(f"{'case':<50} {'seconds':>8}  target  result  rendered/written  machine (ms)")
    for label, seconds, target, report, calibrated in results:
        limit = f"<= {target:>4.0f}" if target is not None else "      -"
        drawn = f"{report.published.rendered}/{report.published.written}"
        print(
            f"{label:<50} {seconds:>8.2f}  {limit}  {verdict(seconds, target):<6}  "
            f"{drawn:<16}  {calibrated:>12.1f}"
        )
    print(
        "machine (ms): a fixed piece of Python timed just before the build (`machine_ms`): "
        "the higher, the slower the machine was then"
    )
    if ahead:
        print(
            f"staging and drawing ahead, after the builds of the minutes windows moved or "
            f"the SLA months were counted (the first ones after the full build, then a day's; "
            f"not timed above, "
            f"off the path of any build): {', '.join(f'{x:.2f}' for x in ahead)} s"
        )
    if tidied:
        print(
            f"tidying after each build (drawing moved windows' chart parts, freeing its "
            f"objects, collecting; not timed above): "
            f"{min(tidied):.2f}-{max(tidied):.2f} s"
        )
    if settled:
        print(
            f"then waiting for the retiring of the version before and the spares made up "
            f"(not timed above): {min(settled):.2f}-{max(settled):.2f} s"
        )
    print(f"\nsite: {out}; state: {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--regions", type=int, default=5)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile one more rebuild after the first timed case (one more minute) and print its "
        "N functions of highest cumulative time; with --workers 1 rendering is included",
    )
    parser.add_argument(
        "--stage-with-build",
        dest="stage_ahead",
        action="store_false",
        help="stage a moved window's figures inside the build of its minute (what a one-off "
        "`reconcile site build` does) rather than after it (what the server does)",
    )
    add_keep_option(parser)
    args = parser.parse_args()
    with workspace(args.keep, "site-bench-") as directory:
        run(args, directory)


if __name__ == "__main__":
    main()
