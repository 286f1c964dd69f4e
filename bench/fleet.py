"""The generated fleet the site and history benchmarks share: a config repository of regions,
agents and canaries, and results for every derived canary written by DuckDB SQL."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from harness import (
    agent_doc,
    documents,
    http_canary_doc,
    init_repo,
    region_doc,
    write_file,
)

NAMESPACES = ("web", "payments", "identity", "search", "platform")
ROUTE = """apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: {name}
spec:
  path: /{name}
  traffic_split:
    - name: stable
      weight: 90
      backends:
        - url: http://{name}-stable.internal:8080
    - name: canary
      weight: 10
      backends:
        - url: http://{name}-canary.internal:8080
  canary:
    canary_group: canary
    steps:
      - weight: 10
        pause: 5m
      - weight: 50
        pause: 10m
      - weight: 100
    analysis:
      error_threshold: 0.02
      latency_threshold: 800ms
      max_error_rate_increase: 1.5
      max_latency_increase: 2.0
      min_requests: 50
"""


def say(message: str) -> None:
    """Progress on stderr, flushed."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def write_repo(root: Path, regions: int, canaries: int) -> None:
    """Regions with one agent each, canaries on every agent, two routes; committed."""
    names = [f"region-{index}" for index in range(regions)]
    write_file(
        root / "regions.yaml",
        documents(region_doc(name, f"Region {index}") for index, name in enumerate(names)),
    )
    write_file(
        root / "agents.yaml",
        documents(agent_doc(f"agent-{index}", name) for index, name in enumerate(names)),
    )
    for index in range(canaries):
        namespace, name = NAMESPACES[index % len(NAMESPACES)], f"service-{index:04d}"
        text = http_canary_doc(
            name,
            namespace,
            schedule="@every 1m",
            selector="['*']",
            check="health",
            url=f"https://{name}.{namespace}.example.com/health",
        )
        write_file(root / "canaries" / namespace / f"{name}.yaml", text)
    write_file(
        root / "routes.yaml", documents(ROUTE.format(name=name) for name in ("checkout", "search"))
    )
    init_repo(root)


# One row per derived canary and minute. Latency: a per-canary base (20-300 ms), a regional
# factor, +-30% noise and a 1% tail of slow runs; 0.5% of runs fail, and region-1 of the first
# canary is down for the last 40 minutes of the data (an incident).
INSERT = """
INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
)
SELECT s.agent, s.region, s.canary, s.parent, 'health', 'http',
       make_timestamptz(CAST(m AS BIGINT) * 60000000 + s.offset_us) AS started_at,
       round(s.base * (0.7 + (hash(m, s.id) % 1000) / 1666.0)
             + CASE WHEN hash(s.id, m, 7) % 100 = 0 THEN 200 + hash(m, s.id, 3) % 2000 ELSE 0 END,
             1) AS duration_ms,
       CASE WHEN hash(m, s.id, 11) % 200 = 0 OR (s.id = 1 AND m >= $outage) THEN 'fail'
            ELSE 'pass' END,
       CASE WHEN hash(m, s.id, 11) % 200 = 0 OR (s.id = 1 AND m >= $outage) THEN 503
            ELSE 200 END,
       CASE WHEN hash(m, s.id, 11) % 200 = 0 OR (s.id = 1 AND m >= $outage)
            THEN 'HTTP 503 Service Unavailable' END,
       NULL,
       make_timestamptz(CAST(m AS BIGINT) * 60000000 + s.offset_us + 5000000)
FROM bench_series s, range($lo, $hi, $step) t(m)
"""

SERIES = """
CREATE OR REPLACE TEMP TABLE bench_series AS
SELECT row_number() OVER (ORDER BY name) AS id, agent, spec->>'region' AS region, name AS canary,
       parent,
       CAST(20 + hash(parent) % 280 AS DOUBLE)
           * (1 + CAST(hash(spec->>'region') % 5 AS DOUBLE) / 10) AS base,
       CAST(hash(name) % 60 AS BIGINT) * 1000000 AS offset_us
FROM resources WHERE kind = 'DerivedCanary'
"""


def generate(
    connection: duckdb.DuckDBPyConnection, first: int, last: int, outage: int, step: int = 1
) -> None:
    """Insert results for the minutes [first, last) a day at a time, with progress (one run
    per derived canary every `step` minutes)."""
    connection.execute(SERIES)
    lower = first
    while lower < last:
        upper = min(last, (lower // 1440 + 1) * 1440)
        started = time.perf_counter()
        connection.execute(INSERT, {"lo": lower, "hi": upper, "outage": outage, "step": step})
        say(
            f"  results for {datetime.fromtimestamp(lower * 60, UTC):%Y-%m-%d %H:%M}"
            f"-{datetime.fromtimestamp(upper * 60, UTC):%H:%M}: "
            f"{time.perf_counter() - started:.1f}s"
        )
        lower = upper
