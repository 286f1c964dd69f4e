"""The results writer alone: CPU to store 200,000 rows in groups, with and without the
writer's memory of recent rows (`store.results.RecentKeys`).

    .venv/bin/python bench/insert.py [--rows-per-batch 500] [--batches 400] [--group 4]

Rows start within the last minute in random order (the shape of `bench/ingest.py`), 20
agents, 50 canaries each; groups of `--group` batches go in one insert, as the ingest queue
groups them. Without the memory every row is looked up in the table (a scan of the rows
stored over the same minutes, which grows with the rate); with it only possible duplicates
are. Each mode runs on a fresh state file in this process; the figure is CPU seconds.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core.ingest import AcceptedRows
from reconciler.store.db import open_state
from reconciler.store.results import IngestBatch, RecentKeys, insert_results


def batches(count: int, size: int, now: datetime) -> list[IngestBatch]:
    made = []
    for index in range(count):
        agent = f"agent-{index % 20}"
        rows = AcceptedRows.of(
            canary=[f"web/c{k % 50}@{agent}" for k in range(size)],
            parent=[f"web/c{k % 50}" for k in range(size)],
            check_name=["health"] * size,
            check_type=["http"] * size,
            started_at=[now - timedelta(seconds=random.random() * 60) for _ in range(size)],
            duration_ms=[12.0] * size,
            status=["pass"] * size,
            retries=[0] * size,
            code=[200] * size,
            message=[None] * size,
            phases=['{"total_ms":12.0}'] * size,
        )
        made.append(IngestBatch(index, agent, "eu", rows))
    return made


def run(mode: str, work: list[IngestBatch], group: int, now: datetime) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="bench-insert-") as directory:
        connection = open_state(Path(directory) / "state.duckdb")
        assert connection is not None
        recent = RecentKeys() if mode == "memory" else None
        started = time.process_time()
        stored = 0
        for first in range(0, len(work), group):
            counts = insert_results(connection, work[first : first + group], now, recent)
            stored += sum(counts.values())
        cpu = time.process_time() - started
        connection.close()
    return cpu, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows-per-batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--group", type=int, default=4, help="batches per insert (4)")
    args = parser.parse_args()
    random.seed(7)
    now = datetime.now(UTC)
    work = batches(args.batches, args.rows_per_batch, now)
    rows = args.batches * args.rows_per_batch
    print(
        f"insert benchmark: {rows:,} rows, {args.group} batches of {args.rows_per_batch} an insert"
    )
    for mode in ("table", "memory", "table", "memory"):
        cpu, stored = run(mode, work, args.group, now)
        print(
            f"  dedup by {mode:6}: {cpu:5.2f} s CPU, {cpu / rows * 1e6:5.2f} µs a row, "
            f"{stored:,} stored"
        )


if __name__ == "__main__":
    main()
