"""The status site's tables in DuckDB: their schema, watermarks, and the rows they hold.

They live in the state file (`main`) when the builder may write it, else in the connection's
`temp` catalog (rebuilt on every run). `rollups.py` keeps the rollups up to date, `figures.py`
the window tables; `queries.py` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.core.outcomes import SQL_PASSES, SQL_RUNS
from reconciler.core.sketch import BIN_SQL, quantiles_sql
from reconciler.sitebuild.kept import histogram_token, new_token
from reconciler.sitebuild.windows import DAY, ROLLUP_STEP
from reconciler.store.db import Connection

# Bump when a table's shape or meaning changes: the tables are then dropped and rebuilt.
FORMAT = "8"
US = 1_000_000
BUCKET_SQL = f"epoch_us(started_at) // {ROLLUP_STEP * US} * {ROLLUP_STEP}"
DAY_SQL = f"CAST(epoch_us(started_at) // {DAY * US} AS INTEGER)"
ROLLUP_COLUMNS = "parent, region, bucket, runs, passes, p95"
# A latency as pages show it, in SQL: the digits of Python's `f"{p95:.1f}"` (both round the
# exact binary value correctly; a test compares them on ties and large values).
SHOWN_SQL = "printf('%.1f', {})"
FAILURE_COLUMNS = (
    "parent, region, agent, canary, check_name, started_at, status, code, message, duration_ms, "
    "coalesce(retries, 0)"
)
HIST_COLUMNS = "parent, region, day, bin, n"
# A window's stored figures (`site_window`) and their open part (`site_live`).
WINDOW_COLUMNS = "win, parent, region, runs, passes, p50, p95, p99"


@dataclass(frozen=True)
class Tables:
    """Where the site's tables live: `main` (the state file) or `temp` (this connection)."""

    schema: str = "main"

    def named(self, table: str) -> str:
        """The qualified name of `site_<table>`."""
        return f"{self.schema}.site_{table}"

    @property
    def temporary(self) -> bool:
        """Whether the tables vanish with the connection."""
        return self.schema == "temp"

    @property
    def meta(self) -> str:
        """Format version and watermarks."""
        return self.named("meta")

    @property
    def rollup(self) -> str:
        """15-minute buckets per canary and region."""
        return self.named("rollup")

    @property
    def hist(self) -> str:
        """Daily latency histograms per canary and region."""
        return self.named("hist")

    @property
    def window(self) -> str:
        """Window figures per canary and region."""
        return self.named("window")

    @property
    def chart(self) -> str:
        """Chart points per window, canary and region."""
        return self.named("chart")

    @property
    def series(self) -> str:
        """Chart points per window, canary and region, joined into one row per series."""
        return self.named("series")

    @property
    def failures(self) -> str:
        """The runs of the last two days that did not pass."""
        return self.named("failures")

    @property
    def whist(self) -> str:
        """Latency histograms of the long windows, per key of `keys`."""
        return self.named("whist")

    @property
    def live(self) -> str:
        """Figures with each window's open part, for the keys that have one (`live.py`):
        always in `temp`, computed by each build's reading connection."""
        return "temp.site_live"

    @property
    def tail(self) -> str:
        """Chart points from the slot holding each window's stored end on (`live.py`;
        `temp` too)."""
        return "temp.site_tail"

    @property
    def keys(self) -> str:
        """A small integer per (canary, region) and per canary (region NULL)."""
        return self.named("keys")


DDL = {
    "meta": "key VARCHAR NOT NULL, value VARCHAR NOT NULL",
    "rollup": """parent VARCHAR NOT NULL, region VARCHAR NOT NULL, bucket BIGINT NOT NULL,
                 runs BIGINT NOT NULL, passes BIGINT NOT NULL, p95 DOUBLE NOT NULL""",
    "hist": """parent VARCHAR NOT NULL, region VARCHAR NOT NULL,
               day INTEGER NOT NULL, bin SMALLINT NOT NULL, n BIGINT NOT NULL""",
    # Window figures: one row per canary and region, plus one with region NULL (all regions).
    "window": """win VARCHAR NOT NULL, parent VARCHAR NOT NULL, region VARCHAR,
                 runs BIGINT NOT NULL, passes BIGINT NOT NULL,
                 p50 DOUBLE, p95 DOUBLE, p99 DOUBLE""",
    # Chart points: the p95 of each slot (by its start, s) of a window, per canary and region,
    # also as the chart's table shows it (`shown`, formatted once rather than on every page).
    "chart": """win VARCHAR NOT NULL, parent VARCHAR NOT NULL, region VARCHAR NOT NULL,
                slot BIGINT NOT NULL, p95 DOUBLE NOT NULL, shown VARCHAR NOT NULL""",
    # `chart` joined per series when a window's points change (`figures.py`), as pages read
    # them: the first slot and how many, the values shown (comma-separated, by slot), the
    # highest p95 and the last slot's, and every slot only when the series has gaps.
    "series": """win VARCHAR NOT NULL, parent VARCHAR NOT NULL, region VARCHAR NOT NULL,
                 low BIGINT NOT NULL, count BIGINT NOT NULL, shown VARCHAR NOT NULL,
                 highest DOUBLE NOT NULL, latest DOUBLE NOT NULL, slots BIGINT[]""",
    # Runs that did not pass, started in the last two days: the pages' recent failures.
    "failures": """parent VARCHAR NOT NULL, region VARCHAR NOT NULL, agent VARCHAR NOT NULL,
                   canary VARCHAR NOT NULL, check_name VARCHAR NOT NULL,
                   started_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL, code INTEGER,
                   message VARCHAR, duration_ms DOUBLE NOT NULL, retries SMALLINT NOT NULL""",
    # Long windows' latency histograms: counts per key (canary and region, or canary) and bin.
    "whist": "win VARCHAR NOT NULL, id INTEGER NOT NULL, bin SMALLINT NOT NULL, n BIGINT NOT NULL",
    "keys": "id INTEGER NOT NULL, parent VARCHAR NOT NULL, region VARCHAR",
    # Calendar months per canary and region, and per canary (region NULL): `sla.py`.
    "months": """parent VARCHAR NOT NULL, region VARCHAR, month DATE NOT NULL,
                 runs BIGINT NOT NULL, passes BIGINT NOT NULL,
                 p50 DOUBLE, p95 DOUBLE, p99 DOUBLE, through BIGINT NOT NULL""",
}
# Computed by every build on its reading connection (`live.py`), never stored.
LIVE_DDL = {
    "live": """win VARCHAR NOT NULL, parent VARCHAR NOT NULL, region VARCHAR,
               runs BIGINT NOT NULL, passes BIGINT NOT NULL,
               p50 DOUBLE, p95 DOUBLE, p99 DOUBLE""",
    "tail": """win VARCHAR NOT NULL, parent VARCHAR NOT NULL, region VARCHAR NOT NULL,
               slot BIGINT NOT NULL, p95 DOUBLE NOT NULL, shown VARCHAR NOT NULL""",
}


def ensure_tables(connection: Connection, tables: Tables) -> None:
    """Create the site's tables where missing; drop them all when their format is outdated."""
    create = "CREATE TEMP TABLE" if tables.temporary else "CREATE TABLE"
    connection.execute(f"{create} IF NOT EXISTS {tables.meta} ({DDL['meta']})")
    if read_meta(connection, tables).get("format", FORMAT) != FORMAT:
        for name in DDL:
            if name != "meta":
                connection.execute(f"DROP TABLE IF EXISTS {tables.named(name)}")
        connection.execute(f"DELETE FROM {tables.meta}")
    for name, columns in DDL.items():
        connection.execute(f"{create} IF NOT EXISTS {tables.named(name)} ({columns})")


def read_meta(connection: Connection, tables: Tables) -> dict[str, str]:
    """Every `site_meta` entry."""
    return dict(connection.execute(f"SELECT key, value FROM {tables.meta}").fetchall())


def write_meta(connection: Connection, tables: Tables, values: dict[str, str]) -> None:
    """Set `site_meta` entries (inside the caller's transaction)."""
    connection.execute(
        f"DELETE FROM {tables.meta} WHERE key IN (SELECT unnest($keys::VARCHAR[]))",
        {"keys": list(values)},
    )
    connection.execute(
        f"INSERT INTO {tables.meta} SELECT unnest($keys::VARCHAR[]), unnest($values::VARCHAR[])",
        {"keys": list(values), "values": list(values.values())},
    )


def at(seconds: int) -> datetime:
    """A whole-second epoch time as an aware datetime (a TIMESTAMPTZ parameter)."""
    return datetime.fromtimestamp(seconds, UTC)


def scalar(connection: Connection, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    """The first column of a query's first row (None without rows)."""
    row = connection.execute(sql, parameters or {}).fetchone()
    return row[0] if row else None


def rollup_select(where: str, relation: str = "results") -> str:
    """SQL computing rollup rows (ROLLUP_COLUMNS) from the results matching `where`
    (`relation`: `results`, or the view with the archived days, `store.archive.source`)."""
    return f"""SELECT parent, region, bucket, runs, passes, p95
               FROM (SELECT parent, region, bucket, {SQL_RUNS} AS runs,
                            {SQL_PASSES} AS passes,
                            quantile_cont(duration_ms, 0.95) AS p95
                     FROM (SELECT parent, region, {BUCKET_SQL} AS bucket, status, maintenance,
                                  duration_ms
                           FROM {relation} WHERE {where})
                     GROUP BY parent, region, bucket)"""


def hist_select(where: str, relation: str = "results") -> str:
    """SQL computing histogram rows (HIST_COLUMNS) from the results matching `where`."""
    return f"""SELECT parent, region, {DAY_SQL} AS day, {BIN_SQL} AS bin, count(*) AS n
               FROM {relation} WHERE {where}
               GROUP BY parent, region, day, bin"""


def both_levels(relation: str, sign: str = "") -> str:
    """(parent, region, bin, n) summed per canary and region and per canary (region NULL)."""
    return f"""SELECT parent, region, bin, {sign}sum(n) AS n FROM {relation}
               GROUP BY GROUPING SETS ((parent, region, bin), (parent, bin))"""


def ensure_keys(connection: Connection, tables: Tables, relation: str) -> None:
    """Give every (canary, region) and (canary, NULL) of `relation` an id in `site_keys`."""
    connection.execute(
        f"""INSERT INTO {tables.keys} (id, parent, region)
            SELECT (SELECT coalesce(max(id), 0) FROM {tables.keys})
                       + row_number() OVER (ORDER BY parent, region), parent, region
            FROM (SELECT DISTINCT parent, region FROM {relation}) fresh
            WHERE NOT EXISTS (
                SELECT 1 FROM {tables.keys} k
                WHERE k.parent = fresh.parent AND k.region IS NOT DISTINCT FROM fresh.region)"""
    )


def move_histogram(connection: Connection, tables: Tables, window: str, fresh: bool) -> None:
    """Apply `temp.site_delta` (parent, region, bin, n: counts entering, or leaving with a
    negative n) to a window's histogram, through `temp.site_moved` (by key id; left for the
    caller to drop): replaced when `fresh`, else updated in place — a move changes a fraction
    of the rows, and rewriting the histogram (350,000 rows a window at 1,000 canaries) would
    log megabytes each time. The histogram's token changes (`kept.py`)."""
    write_meta(connection, tables, {histogram_token(window): new_token()})
    ensure_keys(connection, tables, "site_delta")
    connection.execute(
        f"""CREATE OR REPLACE TEMP TABLE site_moved AS
            SELECT k.id, d.bin, sum(d.n)::BIGINT AS n FROM site_delta d JOIN {tables.keys} k
              ON k.parent = d.parent AND k.region IS NOT DISTINCT FROM d.region
            GROUP BY k.id, d.bin HAVING sum(d.n) <> 0"""
    )
    if fresh:
        connection.execute(f"DELETE FROM {tables.whist} WHERE win = $w", {"w": window})
        connection.execute(
            f"INSERT INTO {tables.whist} (win, id, bin, n) SELECT $w, id, bin, n FROM site_moved",
            {"w": window},
        )
        return
    match = "w.win = $w AND w.id = m.id AND w.bin = m.bin"
    connection.execute(
        f"UPDATE {tables.whist} w SET n = w.n + m.n FROM site_moved m WHERE {match}",
        {"w": window},
    )
    connection.execute(
        f"""INSERT INTO {tables.whist} (win, id, bin, n) SELECT $w, id, bin, n
            FROM site_moved m
            WHERE NOT EXISTS (SELECT 1 FROM {tables.whist} w WHERE {match})""",
        {"w": window},
    )
    connection.execute(f"DELETE FROM {tables.whist} WHERE win = $w AND n = 0", {"w": window})


def store_window_figures(
    connection: Connection, tables: Tables, window: str, target: str, *, every_key: bool
) -> None:
    """Replace the stored figures `target` with `temp.site_runs` (parent, region, runs,
    passes) and the quantiles of the window's histogram (`site_whist` rows `window`).

    Args:
        every_key: keep the keys the histogram has no counts for, without quantiles; else
            they are left out (the tiered windows: a key with no run left in the window
            has no figures).
    """
    join = "LEFT JOIN" if every_key else "JOIN"
    counts = f"(SELECT id, bin, n FROM {tables.whist} WHERE win = $w)"
    connection.execute(f"DELETE FROM {tables.window} WHERE win = $target", {"target": target})
    connection.execute(
        f"""INSERT INTO {tables.window} ({WINDOW_COLUMNS})
            WITH quantiles AS ({quantiles_sql(counts, "id")})
            SELECT $target, r.parent, r.region, r.runs, r.passes, q.q[1], q.q[2], q.q[3]
            FROM site_runs r
            {join} {tables.keys} k
              ON k.parent = r.parent AND k.region IS NOT DISTINCT FROM r.region
            {join} quantiles q ON q.id = k.id""",
        {"w": window, "target": target},
    )
