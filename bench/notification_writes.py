"""Benchmark what storing notifications costs the state file's writer thread.

Each routed delivery is one `record_delivery` (insert, then trim to the newest 500) and each
group change one `save_groups` (one row replaced). Both run on the writer thread that result
ingest uses, so their time is how long a result batch can wait behind one of them.

    .venv/bin/python bench/notification_writes.py [--writes 1000] [--groups 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.store.db import open_state
from reconciler.store.notifications import KEPT_DELIVERIES, record_delivery, save_groups


def _delivery(at: datetime) -> dict[str, Any]:
    return {
        "at": at,
        "receiver": "oncall",
        "integration": "pagerduty",
        "events": ["incident_opened"],
        "status": "delivered",
        "attempts": 1,
        "error": None,
        "group": "0:oncall:incident-1",
        "reminder": False,
    }


def main() -> None:
    """Time both writes on a fresh state file already holding a full table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        connection = open_state(Path(directory) / "bench.duckdb")
        assert connection is not None
        start = datetime.now(UTC)
        for i in range(KEPT_DELIVERIES + 100):
            record_delivery(connection, _delivery(start + timedelta(seconds=i)))
        began = time.perf_counter()
        for i in range(args.writes):
            record_delivery(connection, _delivery(start + timedelta(hours=1, seconds=i)))
        per_delivery = (time.perf_counter() - began) / args.writes
        groups = [
            {
                "key": f"0:oncall:incident-{i}",
                "route": [0, "oncall"],
                "flush_at": None,
                "last_flush": start.isoformat(),
                "alerts": [
                    [f"incident-{i}", {"type": "incident_opened", "canary": f"shop/c{i}"}, True,
                     False, True],
                ],
            }
            for i in range(args.groups)
        ]  # fmt: skip
        began = time.perf_counter()
        for _ in range(args.writes):
            save_groups(connection, groups, start)
        per_save = (time.perf_counter() - began) / args.writes
        connection.close()
    print(f"record_delivery ({KEPT_DELIVERIES} kept): {per_delivery * 1000:.2f} ms each")
    print(f"save_groups ({args.groups} groups): {per_save * 1000:.2f} ms each")


if __name__ == "__main__":
    main()
