"""`reconcile results archive|export`: results history in Parquet (docs/history.md)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.store.archive import DEFAULT_ARCHIVE_AFTER

NAME = "results"

DESCRIPTION = """\
Results history. Days of results older than the archive age move out of the state file
into Parquet files partitioned by day and region (Hive style, under <state>.history/ by
default); the read API and the status site read live and archived rows alike. `serve`
archives once an hour; `archive` runs it now (with the server stopped: it needs the state
file for writing). `export` writes any range, live or archived, in the same layout for
other tools (DuckDB, Spark, pandas, Trino). See docs/history.md.
"""


def moment(text: str) -> datetime:
    """A UTC date (`2026-11-01`) or an RFC 3339 time (`2026-11-01T12:00:00Z`)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date (2026-11-01) or an RFC 3339 time (2026-11-01T12:00:00Z), got {text!r}"
        ) from None
    if parsed.year < 1970:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def register(commands: Subcommands) -> None:
    """Add `results archive` and `results export` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="archive old results to Parquet, or export a range",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = options.subcommands(parser, "results_command", required=True)
    run_archive = actions.add_parser(
        "archive",
        help="move days older than the archive age to Parquet now",
        description="Move every day of results older than --archive-after out of the state file "
        "into Parquet under --history, then delete history older than --delete-after. Each day "
        "moves in one transaction: stopped at any point, every row is in exactly one place.",
    )
    options.add_state(run_archive)
    options.add_lock_timeout(run_archive)
    add_history_options(run_archive)
    options.add_quiet(run_archive)
    run_export = actions.add_parser(
        "export",
        help="write a time range of results to Parquet files",
        description="Write the results started in [--since, --until), live or archived, to "
        "--out in the history's layout (day=YYYY-MM-DD/region=NAME/part-*.parquet). The state "
        "file is opened read-only.",
    )
    options.add_state(run_export)
    options.add_lock_timeout(run_export)
    run_export.add_argument("--since", type=moment, required=True, help="first start time (UTC)")
    run_export.add_argument(
        "--until", type=moment, required=True, help="end of the range, excluded (UTC)"
    )
    run_export.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="a new or empty directory"
    )


def add_history_options(parser: argparse.ArgumentParser) -> None:
    """--history, --archive-after and --delete-after (shared with `serve`)."""
    parser.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="where archived days go (default: <state>.history next to the state file)",
    )
    parser.add_argument(
        "--archive-after",
        type=options.days,
        default=DEFAULT_ARCHIVE_AFTER,
        metavar="DAYS",
        help="move days older than this out of the state file "
        f"(default: {DEFAULT_ARCHIVE_AFTER.days}d)",
    )
    parser.add_argument(
        "--delete-after",
        type=options.days,
        metavar="DAYS",
        help="delete archived days older than this (default: keep them forever)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Archive or export; 1 on a missing or locked state file or an unwritable directory."""
    from reconciler.cli.state_file import existing_state
    from reconciler.store.archive import ArchiveError, archive, export, history_dir

    read_only = args.results_command == "export"
    connection = existing_state(
        args.state, console, read_only=read_only, lock_timeout=args.lock_timeout
    )
    if connection is None:
        return EXIT_ERROR
    with connection:
        try:
            if read_only:
                rows, files = export(connection, args.since, args.until, args.out)
                console.say(f"exported {rows:,} results in {files} file(s) to {args.out}")
                return EXIT_OK
            report = archive(
                connection,
                args.history or history_dir(args.state),
                datetime.now(UTC),
                args.archive_after,
                args.delete_after,
                console.progress,
            )
        except ArchiveError as error:
            console.error(str(error))
            return EXIT_ERROR
    if report.orphans_removed:
        console.progress(f"removed {report.orphans_removed} file(s) left by an interrupted run")
    console.say(
        f"archived {len(report.days_moved)} day(s), {report.rows_moved:,} results in "
        f"{report.files_written} file(s) ({report.bytes_written / 2**20:.1f} MiB); deleted "
        f"{len(report.days_deleted)} day(s) of history ({report.files_deleted} file(s))"
    )
    return EXIT_OK
