"""The read API of the server (in process): targets, results, uptime, latency, regions."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ConfigRepo, agent_doc, canary_doc
from tests.inprocess import InProcessServer, running_in_process
from tests.server import wait_for

REGIONS = """
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: eu
spec:
  displayName: Europe
  location: Frankfurt, DE
---
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: us
---
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: ap
spec:
  enabled: false
"""

NOW = datetime.now(UTC).replace(microsecond=250_000)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# default/web runs in both regions: (agent, seconds ago, duration ms, status), 30 s apart.
# eu's one failure was cleared by two passes since; us's latest run failed, once: failing
# there, but not for failureThreshold (3) runs in a row, so the status is a partial outage.
WEB_RUNS = [
    ("eu-1", 10, 12.0, "pass"),
    ("eu-1", 40, 48.0, "pass"),
    ("eu-1", 70, 30.0, "fail"),
    ("eu-1", 100, 95.0, "pass"),
    ("eu-1", 130, 27.0, "pass"),
    ("eu-1", 160, 60.0, "pass"),
    ("us-1", 20, 150.0, "fail"),
    ("us-1", 50, 110.0, "pass"),
    ("us-1", 80, 400.0, "error"),
    ("us-1", 110, 130.0, "pass"),
]


def quantile_cont(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as DuckDB's quantile_cont does."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


def quantiles(values: Sequence[float]) -> dict[str, Any]:
    return {
        f"p{round(q * 100)}": pytest.approx(quantile_cont(values, q), abs=1e-3)
        for q in (0.5, 0.95, 0.99)
    }


def started(seconds_ago: int) -> datetime:
    return NOW - timedelta(seconds=seconds_ago)


def row(canary: str, seconds_ago: int, duration: float, status: str) -> dict[str, Any]:
    return {
        "canary": canary,
        "check": "check",
        "started_at": started(seconds_ago).isoformat(),
        "duration_ms": duration,
        "status": status,
        "code": 200 if status == "pass" else 503,
        "message": None if status == "pass" else "unexpected status",
        "phases": {"connect_ms": 1.0, "total_ms": duration},
    }


def post(server: InProcessServer, agent: str, rows: list[dict[str, Any]]) -> None:
    response = server.client.post(
        "/api/agent/results",
        headers={"Authorization": f"Bearer {server.token(agent)}"},
        content=json.dumps({"results": rows}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(rows), response.text


def make_repo(path: Path) -> ConfigRepo:
    repo = ConfigRepo(path)
    repo.write("regions.yaml", REGIONS)
    repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    # Every 10 minutes: the runs below stay fresh (3 periods) however late in a long test
    # session this module runs, since their times are fixed when it is imported.
    canaries = {
        "web": canary_doc("web", selector="['*']"),
        "api": canary_doc("api", "['eu-1']", namespace="monitoring"),
        "db": canary_doc("db", selector="['us-1']"),
        "idle": canary_doc("idle", selector="['*']"),
    }
    for name, document in canaries.items():
        repo.write(f"canaries/{name}.yaml", document.replace("@every 30s", "@every 10m"))
    repo.commit("initial")
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """One server with known results: web partial outage, api operational, db major outage
    (three failed runs in a row in its only region), idle without data."""
    base = tmp_path_factory.mktemp("read-api")
    repo = make_repo(base / "config")
    with running_in_process(repo.path, base / "state.duckdb") as process:
        process.wait_ready()
        for agent in ("eu-1", "us-1"):
            runs = [r for r in WEB_RUNS if r[0] == agent]
            post(process, agent, [row(f"default/web@{agent}", *r[1:]) for r in runs])
        post(process, "eu-1", [row("monitoring/api@eu-1", 15, 20.0, "pass")])
        post(
            process,
            "us-1",
            [
                row("default/db@us-1", 25, 5.0, "fail"),
                row("default/db@us-1", 55, 5.0, "fail"),
                row("default/db@us-1", 85, 5.0, "fail"),
                row("default/db@us-1", 7200, 5.0, "pass"),
            ],
        )
        yield process


def get(server: InProcessServer, path: str, **params: str) -> Any:
    response = server.client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def durations(region: str | None = None) -> list[float]:
    agent = {"eu": "eu-1", "us": "us-1"}.get(region or "")
    return [d for a, _, d, _ in WEB_RUNS if agent is None or a == agent]


def test_targets_have_the_one_status_with_the_last_run_beside_it(server: InProcessServer) -> None:
    targets = {t["id"]: t for t in get(server, "/api/v1/targets")["targets"]}
    assert set(targets) == {"default.web", "monitoring.api", "default.db", "default.idle"}
    web = targets["default.web"]
    assert (web["name"], web["namespace"]) == ("web", "default")
    assert (web["regions"], web["agents"]) == (["eu", "us"], ["eu-1", "us-1"])
    assert web["status"] == "partial_outage"
    assert web["regions_down"] == [], "no region failed three runs in a row"
    assert {r: s["status"] for r, s in web["region_status"].items()} == {
        "eu": "operational",
        "us": "partial_outage",
    }
    assert web["last_run"] == {"at": started(10).isoformat().replace("+00:00", "Z"),
                               "status": "pass"}  # fmt: skip
    assert web["region_status"]["us"]["last_run"]["status"] == "fail"
    assert targets["monitoring.api"]["status"] == "operational"
    assert targets["monitoring.api"]["regions"] == ["eu"]
    assert targets["default.db"]["status"] == "major_outage"
    assert targets["default.db"]["regions_down"] == ["us"]
    assert targets["default.idle"]["status"] == "unknown"
    assert targets["default.idle"]["last_run"] is None


def test_uptime_overall_by_check_and_by_region(server: InProcessServer) -> None:
    report = get(server, "/api/v1/targets/default.web/uptime")
    assert (report["total"], report["passed"]) == (10, 7)
    assert report["uptime"] == pytest.approx(0.7)
    assert report["checks"] == [
        {
            "check": "check",
            "total": 10,
            "passed": 7,
            "degraded": 0,
            "retried": 0,
            "uptime": pytest.approx(0.7),
        }
    ]
    assert report["region"] is None

    eu = get(server, "/api/v1/targets/default.web/uptime", region="eu")
    assert (eu["total"], eu["passed"], eu["region"]) == (6, 5, "eu")
    assert eu["uptime"] == pytest.approx(5 / 6)

    empty = get(server, "/api/v1/targets/default.idle/uptime")
    assert (empty["total"], empty["passed"], empty["uptime"], empty["checks"]) == (0, 0, None, [])


def test_latency_quantiles_and_series(server: InProcessServer) -> None:
    report = get(server, "/api/v1/targets/default.web/latency")
    assert report["count"] == 10
    assert {k: report[k] for k in ("p50", "p95", "p99")} == quantiles(durations())
    assert (report["step"], report["step_seconds"]) == ("5m", 300)
    assert sum(point["count"] for point in report["series"]) == 10

    minute = get(server, "/api/v1/targets/default.web/latency", step="1m", region="us")
    assert minute["count"] == 4
    assert {k: minute[k] for k in ("p50", "p95", "p99")} == quantiles(durations("us"))
    assert minute["series"] == expected_series(["us-1"], 60)


def expected_series(agents: list[str], step: int) -> list[dict[str, Any]]:
    """The buckets computed by hand: epoch-aligned `step`-second buckets, oldest first."""
    buckets: dict[int, list[float]] = {}
    for agent, ago, duration, _ in WEB_RUNS:
        if agent in agents:
            seconds = (started(ago) - EPOCH) // timedelta(seconds=1)
            buckets.setdefault(seconds // step * step, []).append(duration)
    return [
        {
            "at": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": len(values),
            **quantiles(values),
        }
        for start, values in sorted(buckets.items())
    ]


def test_latency_by_region(server: InProcessServer) -> None:
    report = get(server, "/api/v1/targets/default.web/latency/by-region", step="1m")
    assert [r["region"] for r in report["regions"]] == ["eu", "us"]
    for entry, region, agent in zip(report["regions"], ("eu", "us"), ("eu-1", "us-1"), strict=True):
        assert entry["count"] == len(durations(region))
        assert {k: entry[k] for k in ("p50", "p95", "p99")} == quantiles(durations(region))
        assert entry["series"] == expected_series([agent], 60)

    only_eu = get(server, "/api/v1/targets/default.web/latency/by-region", region="eu")
    assert [r["region"] for r in only_eu["regions"]] == ["eu"]

    idle = get(server, "/api/v1/targets/default.idle/latency/by-region")
    assert [(r["region"], r["count"], r["p95"], r["series"]) for r in idle["regions"]] == [
        ("eu", 0, None, []),
        ("us", 0, None, []),
    ]


def test_target_regions_table(server: InProcessServer) -> None:
    regions = get(server, "/api/v1/targets/default.web/regions")["regions"]
    eu, us = regions
    assert (eu["region"], eu["agents"], eu["total"], eu["passed"]) == ("eu", ["eu-1"], 6, 5)
    assert eu["uptime"] == pytest.approx(5 / 6)
    assert (eu["p50"], eu["p95"]) == (
        quantiles(durations("eu"))["p50"],
        quantiles(durations("eu"))["p95"],
    )
    assert (eu["status"], eu["last_status"]) == ("operational", "pass")
    assert eu["last_run_at"] == started(10).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (us["region"], us["total"], us["passed"], us["status"], us["last_status"]) == (
        "us",
        4,
        2,
        "partial_outage",
        "fail",
    )
    assert us["p95"] == quantiles(durations("us"))["p95"]


def test_results_newest_first_with_filters(server: InProcessServer) -> None:
    body = get(server, "/api/v1/targets/default.web/results")
    results = body["results"]
    assert body["limit"] == 100
    assert len(results) == 10
    assert [r["duration_ms"] for r in results] == [
        d for _, _, d, _ in sorted(WEB_RUNS, key=lambda run: run[1])
    ]
    newest = results[0]
    assert newest == {
        "agent": "eu-1",
        "region": "eu",
        "check": "check",
        "started_at": started(10).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "duration_ms": 12.0,
        "status": "pass",
        "retries": 0,
        "code": 200,
        "message": None,
        "phases": {"connect_ms": 1.0, "total_ms": 12.0},
    }
    assert datetime.fromisoformat(newest["started_at"]) == started(10)

    us = get(server, "/api/v1/targets/default.web/results", region="us", limit="2")["results"]
    assert [(r["agent"], r["status"]) for r in us] == [("us-1", "fail"), ("us-1", "pass")]

    window = get(
        server,
        "/api/v1/targets/default.web/results",
        since=started(75).isoformat(),
        until=started(40).isoformat().replace("+00:00", "Z"),
    )
    assert [r["duration_ms"] for r in window["results"]] == [110.0, 30.0]


def test_regions_lists_the_enabled_catalog(server: InProcessServer) -> None:
    assert get(server, "/api/v1/regions") == {
        "regions": [
            {"name": "eu", "displayName": "Europe", "location": "Frankfurt, DE"},
            {"name": "us", "displayName": None, "location": None},
        ]
    }


def test_unknown_target_is_404(server: InProcessServer) -> None:
    for path in ("results", "uptime", "latency", "latency/by-region", "regions"):
        response = server.client.get(f"/api/v1/targets/default.nope/{path}")
        assert response.status_code == 404, path
        assert "default.nope" in response.json()["error"]
    assert server.client.get("/api/v1/targets/web/uptime").status_code == 404


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("uptime", {"since": "yesterday"}, "since: expected an RFC 3339 time"),
        ("uptime", {"until": "2024-05-01T12:00:00"}, "until: expected an RFC 3339 time"),
        ("uptime", {"since": "1h", "until": "2h"}, "must be before until"),
        ("uptime", {"region": "mars"}, "region: expected one of ap, default, eu, us, got 'mars'"),
        ("latency", {"step": "fast"}, "step: expected a duration"),
        ("latency", {"step": "1500ms"}, "step: expected a duration"),
        ("latency", {"step": "1s"}, "expected at most 10000"),
        ("results", {"limit": "0"}, "limit: expected a whole number from 1 to 1000"),
        ("results", {"limit": "ten"}, "limit: expected a whole number"),
    ],
)
def test_bad_parameters_are_400(
    server: InProcessServer, path: str, params: dict[str, str], expected: str
) -> None:
    response = server.client.get(f"/api/v1/targets/default.web/{path}", params=params)
    assert response.status_code == 400
    assert expected in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        # `window=` is no parameter: the answer was for the default 24 hours, silently.
        (
            "/api/v1/targets/default.web/latency",
            {"window": "1h"},
            "unknown query parameter 'window'; it takes since, until, region, step",
        ),
        (
            "/api/v1/targets/default.web/results",
            {"limt": "5", "sinse": "1h"},
            "unknown query parameters 'limt', 'sinse'; it takes since, until, region, limit",
        ),
        # The list of targets takes no filter: `region=` did not filter it.
        ("/api/v1/targets", {"region": "eu"}, "unknown query parameter 'region'; it takes none"),
        ("/api/v1/incidents", {"status": "open"}, "it takes canary, state, limit"),
        ("/api/v1/notifications", {"since": "1h"}, "it takes limit"),
        ("/api/v1/maintenance", {"day": "3"}, "unknown query parameter 'day'; it takes days"),
        ("/api/v1/status", {"verbose": "1"}, "it takes none"),
    ],
)
def test_unknown_query_parameters_are_400(
    server: InProcessServer, path: str, params: dict[str, str], expected: str
) -> None:
    response = server.client.get(path, params=params)
    assert response.status_code == 400
    assert expected in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        # An empty value was answered for the default (24 hours, 100 rows) as if absent.
        ("/api/v1/targets/default.web/uptime", "since=", "since: the value is empty"),
        ("/api/v1/targets/default.web/uptime", "since", "since: the value is empty"),
        ("/api/v1/targets/default.web/results", "limit=&since=1h", "limit: the value is empty"),
        ("/api/v1/targets/default.web/latency", "region=", "region: the value is empty"),
        # A repeated one was answered for whichever value the route read.
        ("/api/v1/targets/default.web/uptime", "since=1h&since=2h", "since: given twice"),
        ("/api/v1/incidents", "state=open&state=resolved", "state: given twice"),
        ("/api/v1/maintenance", "days=1&days=2&days=3", "days: given 3 times"),
    ],
)
def test_empty_or_repeated_query_parameters_are_400_naming_them(
    server: InProcessServer, path: str, query: str, expected: str
) -> None:
    response = server.client.get(f"{path}?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(expected), response.text


def test_relative_windows_and_default_steps(server: InProcessServer) -> None:
    week = get(server, "/api/v1/targets/default.web/latency", since="7d")
    assert (week["step"], week["count"]) == ("1h", 10)
    month = get(server, "/api/v1/targets/default.web/latency", since="30d")
    assert month["step"] == "6h"
    old = get(server, "/api/v1/targets/default.web/uptime", since="2d", until="1d")
    assert old["total"] == 0
    assert get(server, "/api/v1/targets/default.db/uptime")["total"] == 4
    assert get(server, "/api/v1/targets/default.db/uptime", since="1h")["total"] == 3
    assert get(server, "/api/v1/targets/default.db/uptime", since="1d12h")["total"] == 4
    since = datetime.fromisoformat(week["since"])
    until = datetime.fromisoformat(week["until"])
    assert until - since == timedelta(days=7)


def midnight_z(moment: datetime) -> str:
    """The UTC midnight starting `moment`'s day, as RFC 3339 with a Z."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (midnight_z(NOW - timedelta(days=40)), midnight_z(NOW + timedelta(days=1))),
        ("1970-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
    ],
    ids=["41 whole days", "1970 to 9999"],
)
def test_whole_day_windows_over_a_month_count_every_run(
    server: InProcessServer, since: str, until: str
) -> None:
    """Both ends at UTC midnight and over 31 days apart: read off the per-day tier with no
    partial day at either end (this answered 500 once)."""
    window = {"since": since, "until": until}
    uptime = get(server, "/api/v1/targets/default.web/uptime", **window)
    assert (uptime["total"], uptime["passed"], uptime["uptime"]) == (10, 7, pytest.approx(0.7))
    assert [(c["check"], c["total"], c["passed"]) for c in uptime["checks"]] == [("check", 10, 7)]
    us = get(server, "/api/v1/targets/default.web/uptime", region="us", **window)
    assert (us["total"], us["passed"]) == (4, 2)

    latency = get(server, "/api/v1/targets/default.web/latency", **window)
    assert latency["count"] == 10
    assert sum(point["count"] for point in latency["series"]) == 10
    error = latency["quantile_error"]
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert latency[name] == pytest.approx(quantile_cont(durations(), q), rel=error), name


def test_a_whole_day_window_without_runs_counts_zero(server: InProcessServer) -> None:
    """Zero runs, not null ones, when the per-day tier has nothing in the window."""
    window = {
        "since": midnight_z(NOW - timedelta(days=80)),
        "until": midnight_z(NOW - timedelta(days=40)),
    }
    uptime = get(server, "/api/v1/targets/default.web/uptime", **window)
    assert (uptime["total"], uptime["passed"], uptime["uptime"]) == (0, 0, None)
    assert uptime["checks"] == []
    latency = get(server, "/api/v1/targets/default.web/latency", **window)
    assert (latency["count"], latency["p50"], latency["series"]) == (0, None, [])


def test_a_step_longer_than_any_window_is_one_bucket(server: InProcessServer) -> None:
    # 999999999d is too many microseconds for a 64-bit integer (this answered 500 once).
    latency = get(server, "/api/v1/targets/default.web/latency", step="999999999d")
    assert latency["count"] == 10
    assert [(p["at"], p["count"]) for p in latency["series"]] == [("1970-01-01T00:00:00Z", 10)]


def test_read_token_is_required_when_set(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "config")
    env = {"RECONCILER_READ_TOKEN": "read-secret"}
    with running_in_process(repo.path, tmp_path / "state.duckdb", env) as server:
        server.wait_ready()
        paths = [
            "/api/v1/targets",
            "/api/v1/regions",
            "/api/v1/revisions",
            "/api/v1/targets/default.web/results",
            "/api/v1/targets/default.web/uptime",
            "/api/v1/targets/default.web/latency",
            "/api/v1/targets/default.web/latency/by-region",
            "/api/v1/targets/default.web/regions",
        ]
        for path in paths:
            assert server.client.get(path).status_code == 401, path
            wrong = {"Authorization": "Bearer nope"}
            assert server.client.get(path, headers=wrong).status_code == 401, path
            right = {"Authorization": "Bearer read-secret"}
            assert server.client.get(path, headers=right).status_code == 200, path
        assert server.client.get("/api/v1/targets/default.nope/uptime").status_code == 401


def test_read_api_is_open_without_a_read_token(server: InProcessServer) -> None:
    assert server.client.get("/api/v1/targets").status_code == 200
    assert server.client.get("/api/v1/revisions").status_code == 200


def test_revisions_newest_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "config")
    first = repo.git("rev-parse", "HEAD")
    with running_in_process(repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        repo.remove("canaries/idle.yaml")
        second = repo.commit("drop idle")
        assert server.webhook().status_code == 202

        def revisions(**params: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = get(server, "/api/v1/revisions", **params)["revisions"]
            return found

        # The watched working tree may also be applied once while dirty, between the two.
        wait_for(lambda: revisions()[0]["sha"] == second, 10, "the second commit")
        listed = revisions()
        newest, oldest = listed[0], listed[-1]
        assert (newest["message"], newest["author"], newest["dirty"]) == (
            "drop idle",
            "Test Author <author@example.com>",
            False,
        )
        assert (oldest["sha"], oldest["serial"], oldest["message"]) == (first, 1, "initial")
        assert oldest["added"] > 0
        assert sum(r["destroyed"] for r in listed) == 3, "idle and its two derived canaries"
        assert [r["serial"] for r in listed] == sorted((r["serial"] for r in listed), reverse=True)
        assert [datetime.fromisoformat(r["applied_at"]) for r in listed] == sorted(
            (datetime.fromisoformat(r["applied_at"]) for r in listed), reverse=True
        )
        assert [r["sha"] for r in revisions(limit="1")] == [second]
        assert server.client.get("/api/v1/revisions", params={"limit": "x"}).status_code == 400
        assert "default.idle" not in [t["id"] for t in get(server, "/api/v1/targets")["targets"]]
