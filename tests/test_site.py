"""The status site (`reconcile site build`): figures, scoping, links, incremental rebuilds."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.sketch import ALPHA
from reconciler.core.status import document
from reconciler.sitebuild import build_site
from reconciler.sitebuild.fleet_pages import verdict
from reconciler.store.db import Connection, open_state
from reconciler.store.deployments import add_evaluation, latest_runs, save_run
from reconciler.store.resources import all_resources
from reconciler.store.status import canary_statuses
from tests import children
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc, run_cli
from tests.rows import RESULT_COLUMNS_V1

NOW = datetime(2026, 11, 20, 13, 7, tzinfo=UTC)
START = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)

# (agent, region, duration ms, status), in the order they ran (10 minutes apart per agent).
SHOP = [
    ("eu-1", "eu", 10.0, "pass"),
    ("eu-1", "eu", 20.0, "pass"),
    ("eu-1", "eu", 30.0, "pass"),
    ("eu-1", "eu", 40.0, "pass"),
    ("eu-1", "eu", 100.0, "fail"),  # eu-1's latest run failed
    ("eu-2", "eu", 15.0, "pass"),
    ("eu-2", "eu", 25.0, "pass"),
    ("eu-2", "eu", 35.0, "pass"),
    ("us-1", "us", 50.0, "pass"),
    ("us-1", "us", 60.0, "pass"),
]
API = [("us-1", "us", 200.0, "pass"), ("us-1", "us", 300.0, "pass")]

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  traffic_split:
    - name: stable
      weight: 90
      backends:
        - url: http://stable.internal:8080
    - name: canary
      weight: 10
      backends:
        - url: http://canary.internal:8080
  canary:
    canary_group: canary
    steps:
      - weight: 10
        pause: 5m
      - weight: 100
    analysis:
      error_threshold: 0.02
      latency_threshold: 800ms
      min_requests: 50
"""


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont), by hand."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def ms(value: float) -> str:
    return f"{value:,.1f} ms"


def near(shown: str, exact: float) -> bool:
    """Whether a latency as a page shows it is within the histograms' accuracy of `exact`."""
    value = float(shown.removesuffix(" ms").replace(",", ""))
    return abs(value / exact - 1) <= ALPHA + 0.001  # and the last digit's rounding


def state_schema(connection: Connection) -> str:
    """The state file's `main` schema, named with its database: once a temporary build made
    `temp.site_*` tables, `main.site_*` names them rather than the state file's."""
    row = connection.execute("SELECT current_database()").fetchone()
    assert row is not None
    return f'"{row[0]}".main'


def store(
    connection: Connection, canary: str, run: tuple[str, str, float, str], started: datetime
) -> None:
    """Store one run of `canary` on an agent's derived canary (received 2 s after it started)."""
    agent, region, duration, status = run
    connection.execute(
        f"INSERT INTO results ({RESULT_COLUMNS_V1}) "
        "VALUES (?, ?, ?, ?, 'check', 'http', ?, ?, ?, ?, ?, NULL, ?)",
        [
            agent,
            region,
            f"{canary}@{agent}",
            canary,
            started,
            duration,
            status,
            200 if status == "pass" else 503,
            None if status == "pass" else "HTTP 503 <upstream>",
            started + timedelta(seconds=2),
        ],
    )


def insert(connection: Connection, canary: str, rows: list[tuple[str, str, float, str]]) -> None:
    """Store runs of `canary`, 10 minutes apart per agent from START."""
    seen: dict[str, int] = {}
    for row in rows:
        index = seen[row[0]] = seen.get(row[0], -1) + 1
        store(connection, canary, row, START + timedelta(minutes=10 * index))


def apply(repo: ConfigRepo, state: Path) -> None:
    result = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve", "-q")
    assert result.code == 0, result.err


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, Connection]]:
    """Regions eu and us; web/shop on every agent, web/api on us-1; a canary route."""
    repo = ConfigRepo(tmp_path / "config")
    repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    repo.write(
        "agents.yaml",
        "---\n".join(agent_doc(name, region) for name, region in [
            ("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us"),
        ]),
    )  # fmt: skip
    # Every 10 minutes, as the runs below: a run stays fresh for 30 minutes (3 periods).
    shop = canary_doc("shop", namespace="web")
    api = canary_doc("api", selector="['us-*']", namespace="web")
    repo.write("shop.yaml", shop.replace("@every 30s", "@every 10m"))
    repo.write("api.yaml", api.replace("@every 30s", "@every 10m"))
    repo.write("route.yaml", ROUTE)
    repo.commit("fleet")
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    connection = open_state(state)
    assert connection is not None
    insert(connection, "web/shop", SHOP)
    insert(connection, "web/api", API)
    connection.execute(
        "INSERT INTO incidents VALUES (7, 'web/shop', ?, NULL, 'open')",
        [START + timedelta(minutes=40)],
    )
    connection.execute(
        "INSERT INTO incident_timeline VALUES (7, ?, 'eu', 'down')",
        [START + timedelta(minutes=40)],
    )
    record_evaluation(connection)
    yield state, connection
    connection.close()


def record_evaluation(connection: Connection) -> None:
    """The `checkout` route (ROUTE) at its first step, with one failed evaluation."""
    run = latest_runs(connection)["checkout"].run_id
    runtime = {"step": 0, "weights": {"stable": 90, "canary": 10}, "consecutive_failures": 1}
    save_run(connection, run, "progressing", runtime, NOW)
    thresholds = {
        "error_threshold": 0.02, "latency_threshold_ms": 800.0, "max_error_rate_increase": 1.5,
        "max_latency_increase": 2.0, "max_error_rate_delta": None, "min_requests": 50,
    }  # fmt: skip
    detail = {
        "failed_rules": ["error_threshold"], "canary_group": "canary",
        "baseline_group": "stable", "canary_requests": 120, "canary_errors": 6,
        "canary_error_rate": 0.05, "canary_p99_ms": 310.0, "baseline_requests": 1000,
        "baseline_errors": 10, "baseline_error_rate": 0.01, "baseline_p99_ms": 290.0,
        "error_rate_ratio": 5.0, "latency_ratio": 1.07, "error_rate_delta_pp": 4.0,
        "thresholds": thresholds,
    }  # fmt: skip
    add_evaluation(connection, run, "checkout", NOW, 0, "fail", "error rate too high", detail)


def read(site: Path, page: str) -> str:
    return (site / page).read_text()


def kpi(html: str, label: str) -> str:
    found = re.search(
        rf'kpi-label">{re.escape(label)}</span> <span class="kpi-value">([^<]*)<', html
    )
    assert found, label
    return found.group(1)


def region_row(html: str, region: str) -> list[str]:
    found = re.search(rf'<th scope="row"><a href="[^"]*">{region}</a></th>(.*?)</tr>', html)
    assert found, region
    return re.findall(r"<td(?: class=\"opt\")?>(.*?)</td>", found.group(1))


def test_figures_match_hand_computed_uptime_and_quantiles(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    report = build_site(connection, site, NOW)
    assert report.published.first and report.published.written == report.published.pages + 1

    shop = read(site, "canary/web.shop.html")
    every = [duration for _, _, duration, _ in SHOP]
    assert kpi(shop, "Uptime (24h)") == "90.00%"  # 9 of 10 runs passed
    # Quantiles come from 2% histograms (mergeable: each build adds the newest runs).
    assert near(kpi(shop, "p50"), quantile(every, 0.5))
    assert near(kpi(shop, "p95"), quantile(every, 0.95))
    assert near(kpi(shop, "p99"), quantile(every, 0.99))
    assert kpi(shop, "Check runs") == "10"
    eu = [d for _, region, d, _ in SHOP if region == "eu"]
    us = [d for _, region, d, _ in SHOP if region == "us"]
    # Region, then: uptime, p50, p95, runs, last status.
    for region, values, uptime, runs in (("eu", eu, "87.50%", "8"), ("us", us, "100%", "2")):
        row = region_row(shop, region)
        assert (row[0], row[3]) == (uptime, runs)
        assert near(row[1], quantile(values, 0.5)) and near(row[2], quantile(values, 0.95))

    # 7 and 30 days hold the same runs.
    for page in ("canary/web.shop-7d.html", "canary/web.shop-30d.html"):
        long = read(site, page)
        assert kpi(long, "Uptime (7d)" if "7d" in page else "Uptime (30d)") == "90.00%"
        assert near(kpi(long, "p95"), quantile(every, 0.95))

    # The status is the read API's (core/status.py): the runs are hours old, so every
    # region's is unknown, and incident #7 is open, so the canary's is a major outage.
    assert 'class="badge status-major_outage">Major outage</span></h1>' in shop
    assert "HTTP 503 &lt;upstream&gt;" in shop  # recent failures, escaped
    statuses = canary_statuses(connection, all_resources(connection), NOW)
    assert statuses["web/shop"].status == "major_outage"
    assert {r.status for r in statuses["web/shop"].regions.values()} == {"unknown"}
    assert statuses["web/api"].status == "unknown"

    index = read(site, "index.html")
    shop_row = re.search(r'web\.shop\.html">web/shop</a></th>(.*?)</tr>', index)
    assert shop_row
    cells = re.findall(r"<td[^>]*>(.*?)</td>", shop_row.group(1))
    assert cells[1] == "90.00%" and cells[2] == kpi(shop, "p95")
    assert 'aria-label="Filter by region"' in index  # two regions


def test_a_canary_with_no_recent_run_shows_when_it_last_ran(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    # web/shop's runs are eleven hours old: no recent data in any region, and its last run
    # (eu-1's failure at 01:40) and each region's are still told, with their time.
    shop = canary_statuses(connection, all_resources(connection), NOW)["web/shop"]
    assert {r.status for r in shop.regions.values()} == {"unknown"}
    assert shop.last_run is not None
    assert (shop.last_run.started_at, shop.last_run.passed) == (
        START + timedelta(minutes=40),
        False,
    )
    us = shop.regions["us"].last_run
    assert us is not None and (us.started_at, us.passed) == (START + timedelta(minutes=10), True)
    api = document(shop)["region_status"]["us"]["last_run"]  # type: ignore[index]
    assert api == {"at": "2026-11-20T01:10:00Z", "status": "pass"}

    site = state.parent / "site"
    build_site(connection, site, NOW)
    page = read(site, "canary/web.shop.html")
    assert kpi(page, "Last run") == "failed "
    assert '<span class="kpi-when">at 2026-11-20 01:40 UTC</span>' in page
    assert "last run passed at 2026-11-20 01:10 UTC" in page  # the us row
    assert "last run failed at 2026-11-20 01:40 UTC" in read(site, "index.html")

    # A day after, the last run is no longer looked for.
    build_site(connection, site, START + timedelta(hours=26))
    assert kpi(read(site, "canary/web.shop.html"), "Last run") == "—"


def test_canary_status_read_from_the_state_file_counts_the_steps(
    fleet: tuple[Path, Connection],
) -> None:
    # Without a running server the CLI reads the state file; it printed "step 1/?".
    state, connection = fleet
    connection.close()
    result = run_cli("canary", "status", "--state", state)
    assert result.code == 0, result.err
    assert "checkout: progressing (run checkout#1), step 1/2, weights stable 90%" in result.out


def test_90_and_365_day_pages_count_today_and_the_days_before(
    fleet: tuple[Path, Connection],
) -> None:
    state, connection = fleet
    site = state.parent / "site"
    every = [duration for _, _, duration, _ in SHOP]
    # Today: the runs are in the long windows' open part; two days later, in a whole day of
    # the per-day tier.
    for now in (NOW, NOW + timedelta(days=2)):
        build_site(connection, site, now)
        for name in ("90d", "365d"):
            page = read(site, f"canary/web.shop-{name}.html")
            assert kpi(page, f"Uptime ({name})") == "90.00%", (now, name)
            assert kpi(page, "Check runs") == "10"
            assert near(kpi(page, "p95"), quantile(every, 0.95))
            assert (row := region_row(page, "eu")) and (row[0], row[3]) == ("87.50%", "8")
        status = read(site, "status.html")
        assert '<th scope="col">Uptime 365 days</th>' in status
    assert kpi(read(site, "canary/web.shop.html"), "Check runs") != "10"  # 24 hours: none left


def test_region_pages_are_scoped(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    eu, us = read(site, "region-eu.html"), read(site, "region-us.html")
    assert "web/shop" in eu and "web/api" not in eu  # web/api does not run in eu
    shop_eu = re.search(r"web/shop</a></th>(.*?)</tr>", eu)
    shop_us = re.search(r"web/shop</a></th>(.*?)</tr>", us)
    assert shop_eu and shop_us
    shop = read(site, "canary/web.shop.html")
    assert (
        "No recent data" in shop_eu.group(1)
        # hours ago, beyond the status's lookback: the last run is told with its time
        and "last run failed at 2026-11-20 01:40 UTC" in shop_eu.group(1)
        and "87.50%" in shop_eu.group(1)
    )
    assert region_row(shop, "eu")[2] in shop_eu.group(1)  # the canary page's eu p95
    assert "No recent data" in shop_us.group(1) and "100%" in shop_us.group(1)
    assert region_row(shop, "us")[2] in shop_us.group(1)
    api_us = re.search(r"web/api</a></th>(.*?)</tr>", us)
    assert api_us
    p95 = re.findall(r"<td>([\d,.]+ ms)</td>", api_us.group(1))
    assert len(p95) == 1 and near(p95[0], quantile([200.0, 300.0], 0.95))
    assert 'aria-current="page">eu</a>' in eu


def test_incidents_deployments_and_status_pages(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    incidents = read(site, "incidents.html")
    assert "#7" in incidents and 'href="canary/web.shop.html">web/shop</a>' in incidents
    assert "2026-11-20 01:40:00 UTC" in incidents and "<td>eu</td><td>down</td>" in incidents
    deployments = read(site, "deployments.html")
    assert "Route checkout" in deployments and "progressing" in deployments
    assert "step 1 of 2" in deployments and "<td>90%</td>" in deployments
    assert '<td class="failed">5.00% <span class="limit">(≤ 2.00%)</span>' in deployments
    assert "310.0 ms" in deployments and "(≤ 800.0 ms)" in deployments
    # Each evaluation's reason on a full-width row under its figures, not a squeezed column.
    evaluations = re.findall(r'<tbody class="evaluation">(.*?)</tbody>', deployments, re.S)
    assert evaluations and all(
        re.search(r'</tr>\s*<tr class="reason"><td colspan="7" class="message">.+</td></tr>', e)
        for e in evaluations
    )
    status = read(site, "status.html")
    assert "Major outage" in status and "Open incidents" in status
    # The open incident's start as every other page shows a time, not as the store keeps it.
    assert re.search(
        r'<a href="canary/web.shop.html">web/shop</a>: <a href="incidents.html#incident-7">'
        r"incident #7</a> since <time datetime=\S+>2026-11-20 01:40:00 UTC</time>",
        status,
    )
    assert '<span class="badge state-progressing">Progressing</span>' in deployments
    assert "<dt>Regions down</dt><dd>eu</dd>" in incidents

    # Resolved, an incident still says which regions were down, and for how long.
    resolved = START + timedelta(minutes=40, hours=2, seconds=300)
    connection.execute("UPDATE incidents SET state = 'resolved', resolved_at = ? WHERE id = 7",
                       [resolved])  # fmt: skip
    connection.execute("INSERT INTO incident_timeline VALUES (7, ?, 'eu', 'up')", [resolved])
    build_site(connection, site, NOW + timedelta(minutes=1))
    incidents = read(site, "incidents.html")
    assert "<dt>Regions that were down</dt><dd>eu</dd>" in incidents
    lasted = r"<dd><time datetime=\S+>2026-11-20 03:45:00 UTC</time>, after 2 h 05 min</dd>"
    assert re.search(lasted, incidents)


def test_the_24_hour_chart_says_where_the_day_changes(fleet: tuple[Path, Connection]) -> None:
    """A 24-hour chart spans two dates: its midnight tick is labelled with the day, not 00:00."""
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    ticks = re.findall(r'<text x="\d+" y="\d+">([^<]*)</text>', read(site, "canary/web.shop.html"))
    assert ticks == ["18:00", "20 Nov", "06:00", "12:00"]


def test_a_region_page_lists_the_maintenance_of_its_own_canaries(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    repo.write("shop.yaml", canary_doc("shop", namespace="web"))
    repo.write("api.yaml", canary_doc("api", selector="['us-*']", namespace="web"))
    now = datetime.now(UTC).replace(microsecond=0)
    repo.write(
        "window.yaml",
        "apiVersion: canary-reconciler/v1\nkind: Maintenance\nmetadata:\n  name: api-upgrade\n"
        f"spec:\n  canaries: {{names: [api]}}\n  start: {(now - timedelta(hours=1)).isoformat()}\n"
        f"  end: {(now + timedelta(hours=1)).isoformat()}\n",
    )
    repo.commit("a window for a canary of us only")
    state, site = tmp_path / "state.duckdb", tmp_path / "site"
    apply(repo, state)
    assert run_cli("site", "build", "--state", state, "--out", site, "-q").code == 0
    assert "api-upgrade" in read(site, "index.html")
    assert "api-upgrade" in read(site, "region-us.html")
    assert "api-upgrade" not in read(site, "region-eu.html")  # web/api does not run in eu


def test_titles_name_the_window(fleet: tuple[Path, Connection]) -> None:
    """Tabs, bookmarks and history tell a page's windows apart."""
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    titles = {
        page: re.search(r"<title>(.*?) &middot;", read(site, page)).group(1)  # type: ignore[union-attr]
        for page in ("index.html", "index-7d.html", "region-eu-30d.html",
                     "canary/web.shop.html", "canary/web.shop-365d.html")
    }  # fmt: skip
    assert titles == {
        "index.html": "Fleet overview, 24 hours",
        "index-7d.html": "Fleet overview, 7 days",
        "region-eu-30d.html": "Region eu, 30 days",
        "canary/web.shop.html": "web/shop, 24 hours",
        "canary/web.shop-365d.html": "web/shop, 365 days",
    }
    assert verdict(["operational", "partial_outage"]) == ("partial_outage", "Partial outage")
    assert verdict(["major_outage", "unknown"]) == ("major_outage", "Major outage")
    assert verdict(["unknown", "operational"]) == ("operational", "All systems operational")
    assert verdict(["unknown"]) == ("unknown", "No data yet")


def test_links_are_relative_and_assets_local(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    files = sorted(p for p in site.rglob("*") if p.is_file() and p.suffix in (".html", ".css"))
    assert (site / "static" / "site.css") in files and len(files) == 32  # 31 pages (+ 2 CSV)
    for path in files:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path
        for target in re.findall(r'(?:href|src)="([^"]*)"', text):
            assert not target.startswith(("/", "//")) and ":" not in target, (path, target)
            resolved = (path.parent / target.split("#")[0]).resolve()
            assert target.startswith("#") or resolved.is_file(), (path, target)
    page = read(site, "canary/web.shop.html")
    assert '<link rel="stylesheet" href="../static/site.css">' in page
    for landmark in ("<header", "<main", "<nav", "<footer"):
        assert landmark in page
    assert re.search(r'<svg class="chart" [^>]*role="img" aria-labelledby="[^"]+"', page)
    assert "<title id=" in page and "<desc id=" in page and "<summary>Chart data" in page
    assert '<th scope="col">eu (ms)</th>' in page and '<th scope="row">' in page
    assert not list(site.rglob("*.tmp"))


def test_rebuild_rewrites_only_the_pages_that_changed(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.rglob("*.html")}

    # web/api's newest run fails, within the same 5-minute step: windows do not move.
    later = NOW + timedelta(minutes=1)
    store(connection, "web/api", ("us-1", "us", 900.0, "fail"), later - timedelta(seconds=30))
    report = build_site(connection, site, later)
    assert report.windows == []
    changed = {
        p.relative_to(site).as_posix()
        for p, (data, mtime) in before.items()
        if p.read_bytes() != data or p.stat().st_mtime_ns != mtime
    }
    api = {"canary/web.api.html", "canary/web.api-7d.html", "canary/web.api-30d.html"}
    assert api <= changed
    assert not any(page.startswith("canary/web.shop") for page in changed)
    assert "index.html" in changed and "status.html" in changed
    assert report.published.rendered < report.published.pages
    api_page = read(site, "canary/web.api.html")
    # One failed run, fresh: failing in us, not for three runs in a row.
    assert 'status-partial_outage">Partial outage</span></h1>' in api_page
    assert "900.0 ms" in api_page
    assert "Partial outage" in read(site, "status.html")

    unchanged = build_site(connection, site, later)
    assert unchanged.published.written == 0  # the same clock and data: nothing to write


def test_one_region_has_no_region_filter(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("all.yaml", region_doc("eu") + "---\n" + agent_doc("eu-1", "eu") + "---\n"
               + canary_doc("shop", namespace="web"))  # fmt: skip
    repo.commit("one region")
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    connection = open_state(state)
    assert connection is not None
    with connection:
        insert(connection, "web/shop", [("eu-1", "eu", 12.0, "pass")])
        build_site(connection, tmp_path / "site", NOW)
    index = read(tmp_path / "site", "index.html")
    assert "Filter by region" not in index and "web/shop" in index
    assert (tmp_path / "site" / "region-eu.html").exists()


def test_a_site_with_no_canaries_says_so_across_its_tables(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("all.yaml", region_doc("eu") + "---\n" + agent_doc("eu-1", "eu"))
    repo.commit("a region, no canary yet")
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    assert run_cli("site", "build", "--state", state, "--out", tmp_path / "site", "-q").code == 0
    status = read(tmp_path / "site", "status.html")
    # Service, status, and an uptime column per window.
    assert status.count('<th scope="col"') == 7 and ">Uptime 365 days</th>" in status
    assert '<tr><td colspan="7">No services are checked yet.</td></tr>' in status


def test_cli_builds_and_refuses_a_foreign_directory(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    connection.close()
    result = run_cli("site", "build", "--state", state, "--out", state.parent / "site")
    assert result.code == 0, result.err
    assert "pages" in result.out and (state.parent / "site" / "index.html").exists()
    foreign = state.parent / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused = run_cli("site", "build", "--state", state, "--out", foreign)
    assert refused.code == 1 and "not empty" in refused.err
    assert (foreign / "keep.txt").read_text() == "mine"
    # A directory that cannot be made: said plainly, with no traceback.
    nowhere = state.parent / "a-file"
    nowhere.write_text("")
    failed = run_cli("site", "build", "--state", state, "--out", nowhere / "site")
    assert failed.code == 1 and f"cannot write the site to {nowhere / 'site'}: " in failed.err
    assert "Traceback" not in failed.err
    # A file where the site would go is called a file (it was "not empty").
    refused = run_cli("site", "build", "--state", state, "--out", nowhere)
    assert refused.code == 1
    assert f"Error: {nowhere} is a file, not a directory; choose an empty or new" in refused.err
    assert nowhere.read_text() == ""


def test_cli_explains_a_state_held_by_another_process(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    connection = open_state(state)
    assert connection is not None
    connection.close()
    holder = children.popen(
        [sys.executable, "-c",
         f"import duckdb, sys, time; c = duckdb.connect({str(state)!r}); print('held'); "
         "sys.stdout.flush(); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_cli(
            "site", "build", "--state", state, "--out", tmp_path / "site", "--lock-timeout", "0"
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 1
    assert "in use by process" in result.err and "the server is the one to build" in result.err


def test_read_only_state_builds_with_temporary_rollups(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    connection.close()
    reader = open_state(state, read_only=True)
    assert reader is not None
    with reader:
        build_site(reader, state.parent / "site", NOW, temporary=True)
        stored = reader.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary"
        ).fetchall()
        temporary = reader.execute(
            "SELECT table_name FROM duckdb_tables() WHERE temporary"
        ).fetchall()
    assert not any(name.startswith("site_") for (name,) in stored)  # nothing in the file
    assert ("site_rollup",) in temporary
    assert near(kpi(read(state.parent / "site", "canary/web.shop.html"), "p95"), 82.0)


def _rows(connection: Connection, query: str) -> list[tuple[object, ...]]:
    return connection.execute(f"{query} ORDER BY ALL").fetchall()


def test_incremental_rollups_equal_a_build_from_scratch(fleet: tuple[Path, Connection]) -> None:
    """Builds across a 15-minute step, a 2-hour step and midnight, with a late row: windows
    moved by what entered and left equal windows computed from scratch."""
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    day = NOW.replace(hour=0, minute=0)
    arrivals = [
        (NOW + timedelta(minutes=5), [("eu-1", "eu", 11.0, "pass"), ("us-1", "us", 61.0, "pass")]),
        (NOW + timedelta(minutes=20), [("eu-2", "eu", 16.0, "fail")]),
        (day + timedelta(hours=14, minutes=1), [("us-1", "us", 52.0, "pass")]),
        (day + timedelta(hours=23, minutes=55), [("eu-1", "eu", 13.0, "pass")]),
        (day + timedelta(days=1, minutes=1), [("eu-1", "eu", 14.0, "pass")]),
        # The 90- and 365-day windows move at 00:13, by the day that entered.
        (day + timedelta(days=1, minutes=16), [("us-1", "us", 70.0, "fail")]),
    ]
    for started, runs in arrivals:
        for run in runs:
            store(connection, "web/shop", run, started)
        if started.hour == 14:  # a late row: started in the morning, received now
            connection.execute(
                "INSERT INTO results SELECT * REPLACE (? AS started_at, ? AS received_at) "
                "FROM results WHERE canary = 'web/api@us-1' LIMIT 1",
                [day + timedelta(hours=9), started],
            )
        build_site(connection, site, started + timedelta(minutes=4))
    moment = arrivals[-1][0] + timedelta(minutes=4)
    build_site(connection, state.parent / "scratch", moment, temporary=True)
    for query in (
        "SELECT * FROM {}.site_rollup",
        "SELECT parent, region, day, bin, sum(n) FROM {}.site_hist GROUP BY ALL",
        "SELECT * FROM {}.site_window",
        "SELECT * FROM {}.site_chart",
        "SELECT win, parent, region, bin, n FROM {0}.site_whist JOIN {0}.site_keys USING (id)",
        "SELECT * FROM {}.site_failures",
    ):
        stored = _rows(connection, query.format(state_schema(connection)))
        assert stored == _rows(connection, query.format("temp")), query
        assert stored
    api = read(site, "canary/web.api-7d.html")
    assert kpi(api, "Check runs") == "3"  # the late row counts in the 7-day window
    tiered = _rows(
        connection,
        f"SELECT win, runs FROM {state_schema(connection)}.site_window WHERE region IS NULL",
    )
    assert ("365d", 15) in tiered and ("90d", 15) in tiered  # yesterday's runs, moved in


def test_a_removed_canary_loses_its_pages(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("regions.yaml", region_doc("eu") + "---\n" + agent_doc("eu-1", "eu"))
    repo.write("shop.yaml", canary_doc("shop", namespace="web"))
    repo.write("api.yaml", canary_doc("api", namespace="web"))
    repo.commit("two canaries")
    state, site = tmp_path / "state.duckdb", tmp_path / "site"
    apply(repo, state)
    assert run_cli("site", "build", "--state", state, "--out", site, "-q").code == 0
    assert (site / "canary" / "web.api-7d.html").exists()
    repo.remove("api.yaml")
    repo.commit("drop api")
    apply(repo, state)
    assert run_cli("site", "build", "--state", state, "--out", site, "-q").code == 0
    assert not list((site / "canary").glob("web.api*"))
    assert "web/api" not in read(site, "index.html") and "web/shop" in read(site, "index.html")


@pytest.mark.parametrize("later", [timedelta(minutes=30), timedelta(hours=5), timedelta(days=3)])
def test_every_page_says_when_the_newest_result_started_however_long_ago(
    fleet: tuple[Path, Connection], tmp_path: Path, later: timedelta
) -> None:
    """The footer of the pages drawn on every build says when the newest result started,
    read from the last hour first, then the last day, then every result: a fleet silent
    for days still shows when it last ran."""
    _, connection = fleet
    newest = NOW + timedelta(minutes=3, seconds=17)
    store(connection, "web/shop", ("us-1", "us", 50.0, "pass"), newest)
    site = tmp_path / "site"
    build_site(connection, site, newest + later)
    stamp = "newest result started 2026-11-20 13:10:17 UTC"
    for page in ("index.html", "region-us.html", "status.html", "incidents.html"):
        assert stamp in read(site, page), page
