"""Maintenance windows at ingest: what marking a result batch costs beside validating it.

Builds the index of 5,000 derived canaries (as the control plane does per served revision),
then times, per 500-row batch of 50 derived canaries: validation (`validate_rows`), and
marking with no window, with a one-off window and with a recurring window in a zone with
daylight saving time, each covering every canary. Target: marking costs at most a quarter of
validation, whatever the windows.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from reconciler.core.agentconfig import AgentConfig
from reconciler.core.ingest import AcceptedRows, validate_rows
from reconciler.core.maintenance import MaintenanceIndex
from reconciler.core.resources import Resource

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # the night the clocks change in Europe
CANARIES = 5_000
BATCH = 500
IN_BATCH = 50
SHARE_TARGET = 0.25


def _best(work: Callable[[], object], rounds: int) -> float:
    """The median of `rounds` timings of `work`, in seconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _mark(index: MaintenanceIndex, rows: Callable[[], AcceptedRows]) -> int:
    return index.mark(rows())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200, help="timings per figure (200)")
    args = parser.parse_args()
    derived = [
        Resource("DerivedCanary", f"ns/c{i}@eu-1", {"region": "eu"}, "f", parent=f"ns/c{i}")
        for i in range(CANARIES)
    ]
    selected = [f"ns/c{i}" for i in range(CANARIES)]
    windows = {
        "none": [],
        "one-off": [
            Resource(
                "Maintenance",
                "once",
                {
                    "selected": selected,
                    "start": "2026-03-29T00:00:00Z",
                    "end": "2026-03-29T02:00:00Z",
                },
                "f",
            )
        ],
        "recurring": [
            Resource(
                "Maintenance",
                "nightly",
                {
                    "selected": selected,
                    "schedule": "0 2 * * *",
                    "duration": "2h",
                    "timezone": "Europe/Berlin",
                },
                "f",
            )
        ],
    }
    names = [f"ns/c{i % IN_BATCH}@eu-1" for i in range(BATCH)]
    config = AgentConfig(
        agent="eu-1",
        region="eu",
        body=b"{}",
        etag='"x"',
        canaries=frozenset(names),
        checks={name: {"check": "http"} for name in names},
    )
    raw = [
        {
            "canary": name,
            "check": "check",
            "started_at": (NOW - timedelta(seconds=i)).isoformat(),
            "duration_ms": 12.5,
            "status": "pass",
        }
        for i, name in enumerate(names)
    ]
    validation = _best(lambda: validate_rows(raw, config, NOW), args.rounds)
    print(f"validate {BATCH} rows: {validation * 1e3:.3f} ms")
    verdict = validate_rows(raw, config, NOW)
    missed = False
    for label, found in windows.items():
        started = time.perf_counter()
        index = MaintenanceIndex(derived + found)
        built = time.perf_counter() - started

        def fresh() -> AcceptedRows:
            return AcceptedRows(verdict.accepted.table)

        base = _best(fresh, args.rounds)
        marking = max(0.0, _best(functools.partial(_mark, index, fresh), args.rounds) - base)
        share = marking / validation
        verdict_text = "PASS" if share <= SHARE_TARGET else "MISS"
        missed |= share > SHARE_TARGET
        print(
            f"{label:9s} index of {CANARIES:,} derived canaries {built * 1e3:6.1f} ms; "
            f"mark {BATCH} rows {marking * 1e3:6.3f} ms = {share:5.1%} of validation "
            f"(target <= {SHARE_TARGET:.0%}) {verdict_text}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
