"""Cardinality of the per-check series on /metrics: series and bytes per scrape by level.

    .venv/bin/python bench/probe_metrics.py                    # 75,000 derived canaries
    .venv/bin/python bench/probe_metrics.py --derived 1000

Renders the series of N derived canaries (one http check each, names and labels as long as
the bench fleet's: `payments/service-0042` on `agent-3` in `region-3`) at every level and
prints the series count, the bytes of one scrape and the time to render it.
"""

from __future__ import annotations

import argparse
import time

from reconciler.core.probe_metrics import LEVELS, ProbeRun, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--derived", type=int, default=75_000)
    args = parser.parse_args()
    runs = [
        ProbeRun(
            parent=f"payments/service-{index // 5:05d}",
            region=f"region-{index % 5}",
            agent=f"agent-{index % 5}",
            check="health",
            check_type="http",
            passed=index % 100 != 0,
            duration_ms=123.456,
            started_at=1_764_806_400.5 + index,
            code=200,
            phases={"connect_ms": 1.2, "tls_ms": 8.5, "first_byte_ms": 40.3},
        )
        for index in range(args.derived)
    ]
    print(f"{args.derived:,} derived canaries, one http check each")
    print(f"{'level':<8} {'series':>10} {'bytes/scrape':>14} {'render s':>9}")
    for level in LEVELS:
        started = time.perf_counter()
        text = render(runs, level)
        seconds = time.perf_counter() - started
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        print(f"{level:<8} {series:>10,} {len(text.encode()):>14,} {seconds:>9.2f}")


if __name__ == "__main__":
    main()
