"""Rows that arrive late: their buckets and days are recomputed from raw rows.

A row received since the previous refresh (less an overlap: rows are stamped before they
commit) that started before what is already summarised makes its rollup buckets and
histogram days be recomputed; when a stored row really changes, the earliest changed time is
returned so that the windows covering it are recomputed too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.sitebuild.tables import (
    BUCKET_SQL,
    DAY_SQL,
    HIST_COLUMNS,
    ROLLUP_COLUMNS,
    US,
    Tables,
    at,
    hist_select,
    rollup_select,
    scalar,
)
from reconciler.sitebuild.windows import DAY, ROLLUP_STEP, floor_to
from reconciler.store.db import Connection

OVERLAP_US = 60_000_000


def recompute_late(
    connection: Connection, tables: Tables, since_us: int, cursor: int, hist_to: int
) -> int | None:
    """Recompute what rows received late changed; the earliest changed time, if any."""
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_late AS
            SELECT DISTINCT parent, region, {BUCKET_SQL} AS bucket, {DAY_SQL} AS day,
                   started_at < $hist_to AS counted
            FROM results WHERE received_at > $since AND started_at < $cursor""",
        {
            "since": datetime.fromtimestamp(since_us / US, UTC),
            "cursor": at(cursor),
            "hist_to": at(hist_to),
        },
    )
    bounds = connection.execute("SELECT min(bucket), max(bucket) FROM site_late").fetchone()
    if bounds is None or bounds[0] is None:
        connection.execute("DROP TABLE site_late")
        return None
    changed = [
        _replace_late(
            connection,
            tables.rollup,
            "parent, region, bucket",
            ROLLUP_COLUMNS,
            rollup_select(
                "started_at >= $lo AND started_at < $hi AND (parent, region, bucket) IN "
                "(SELECT (parent, region, bucket) FROM site_late)"
            ),
            {"lo": at(bounds[0]), "hi": at(bounds[1] + ROLLUP_STEP)},
            "bucket",
        ),
        _replace_late(
            connection,
            tables.hist,
            "parent, region, day",
            HIST_COLUMNS,
            hist_select(
                "started_at >= $lo AND started_at < $hi AND (parent, region, "
                f"{DAY_SQL}) IN (SELECT (parent, region, day) FROM site_late WHERE counted)"
            ),
            {"lo": at(floor_to(bounds[0], DAY)), "hi": at(hist_to)},
            f"day * {DAY}",
        ),
    ]
    connection.execute("DROP TABLE site_late")
    found = [moment for moment in changed if moment is not None]
    return min(found) if found else None


def _replace_late(
    connection: Connection,
    table: str,
    keys: str,
    columns: str,
    fresh: str,
    parameters: dict[str, Any],
    moment: str,
) -> int | None:
    """Replace a table's rows for the late keys by `fresh`; the earliest changed `moment`."""
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE site_fresh AS SELECT * FROM ({fresh}) t({columns})",
        parameters,
    )
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_stale AS
            SELECT {columns} FROM {table}
            WHERE ({keys}) IN (SELECT ({keys}) FROM site_fresh)"""
    )
    earliest = scalar(
        connection,
        f"""SELECT min({moment}) FROM (
                (SELECT * FROM site_fresh EXCEPT SELECT * FROM site_stale)
                UNION ALL (SELECT * FROM site_stale EXCEPT SELECT * FROM site_fresh)
            )""",
    )
    if earliest is not None:
        connection.execute(
            f"DELETE FROM {table} WHERE ({keys}) IN (SELECT ({keys}) FROM site_stale)"
        )
        connection.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM site_fresh")
    connection.execute("DROP TABLE site_fresh")
    connection.execute("DROP TABLE site_stale")
    return int(earliest) if earliest is not None else None
