"""The status site in a real browser: headless Chromium follows links from the overview to a
canary and a region page, and the chart and tables show the expected numbers."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc, run_cli
from tests.rows import RESULT_COLUMNS_V1
from tests.test_site import ROUTE, record_evaluation

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (make test installs Debian's chromium package)",
    ),
]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# (agent, region, duration ms, status): eu passes 4 of 4, us 3 of 4.
RUNS = [
    ("eu-1", "eu", 100, "pass"), ("eu-1", "eu", 200, "pass"),
    ("eu-1", "eu", 300, "pass"), ("eu-1", "eu", 400, "pass"),
    ("us-1", "us", 100, "pass"), ("us-1", "us", 200, "pass"),
    ("us-1", "us", 300, "fail"), ("us-1", "us", 400, "pass"),
]  # fmt: skip


Run = tuple[str, str, str, datetime, float, str]  # agent, region, canary, started, ms, status


def _built(config_repo: ConfigRepo, tmp_path: Path, runs: list[Run]) -> Path:
    """The site of the config written to `config_repo`, committed and applied, with `runs`."""
    config_repo.commit()
    state = tmp_path / "state.duckdb"
    assert (
        run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve").code == 0
    )
    now = datetime.now(UTC)
    rows = [
        (agent, region, f"{canary}@{agent}", canary, "check", "http", started, ms, status,
         200 if status == "pass" else 500, None if status == "pass" else "HTTP 500", None, now)
        for agent, region, canary, started, ms, status in runs
    ]  # fmt: skip
    with duckdb.connect(str(state)) as connection:
        connection.executemany(
            f"INSERT INTO results ({RESULT_COLUMNS_V1}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    out = tmp_path / "site"
    assert run_cli("site", "build", "--state", state, "--out", out).code == 0
    return out


@pytest.fixture
def site(config_repo: ConfigRepo, tmp_path: Path) -> Path:
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return _built(
        config_repo,
        tmp_path,
        [
            (agent, region, "default/web", now - timedelta(minutes=70 - index % 4), ms, status)
            for index, (agent, region, ms, status) in enumerate(RUNS)
        ],
    )


def test_overview_to_canary_and_region_pages(site: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on(
            "request", lambda r: outside.append(r.url) if not r.url.startswith("file:") else None
        )
        page.goto((site / "index.html").as_uri())
        assert page.locator("main").count() == 1
        assert page.get_by_label("Region").count() + page.locator("nav >> text=eu").count() > 0
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        page.click("a[href='canary/default.web.html']")
        assert page.url.endswith("canary/default.web.html")
        chart = page.locator("svg").first
        assert chart.is_visible()
        assert "p95 latency by region" in (chart.locator("title").text_content() or "")
        assert page.locator("svg polyline, svg path").count() >= 2, "one p95 line per region"
        text = page.locator("main").inner_text()
        assert "87.50%" in text, "uptime 7 of 8"
        p50, p95 = (_millis(page, label) for label in ("p50", "p95"))
        assert abs(p50 / 250 - 1) <= 0.021 and abs(p95 / 400 - 1) <= 0.021, "both regions"
        rows = (
            page.locator("table").filter(has_text="status now in each region").locator("tbody tr")
        )
        assert [r.inner_text().split()[:2] for r in rows.all()] == [
            ["eu", "100%"],
            ["us", "75.00%"],
        ]
        page.screenshot(path=str(ARTIFACTS / "canary.png"), full_page=True)
        page.set_viewport_size({"width": 375, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= 375 + 1, "fits 375 px"
        page.screenshot(path=str(ARTIFACTS / "canary-375.png"), full_page=True)

        page.go_back()
        page.click("a[href='region-us.html']")
        assert "75.00%" in page.locator("main").inner_text()
        page.screenshot(path=str(ARTIFACTS / "region-us.png"), full_page=True)
        browser.close()
    assert outside == [], f"the site fetched something outside file://: {outside}"


def _millis(page: Any, label: str) -> float:
    """A visible KPI card's value in ms."""
    card = page.locator(".kpi:visible", has=page.locator(f".kpi-label:text-is('{label}')"))
    return float((card.locator(".kpi-value").inner_text()).removesuffix(" ms").replace(",", ""))


def _drawn(line: Any) -> bool:
    """Whether a chart line is displayed (a line of one point has no box to be "visible")."""
    return bool(line.evaluate("e => getComputedStyle(e).display !== 'none'"))


def test_the_region_selector_scopes_a_canary_page(site: Path) -> None:
    """Seed 002: a region selector scopes the KPI cards, the latency chart and the recent
    results; from file://, without a server."""
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((site / "canary" / "default.web.html").as_uri())
        uptime = page.locator(
            ".kpi:visible", has=page.locator(".kpi-label:text-is('Uptime (24h)')")
        )
        assert uptime.locator(".kpi-value").inner_text() == "87.50%"
        lines = page.locator("svg path.line")
        assert [_drawn(line) for line in lines.all()] == [True, True]
        failures = page.locator("section", has_text="Recent failures").locator("tbody tr")
        assert failures.count() == 1 and failures.first.is_visible()  # us's failed run

        page.click(".scope-bar label[for='scope-us']")
        assert uptime.locator(".kpi-value").inner_text() == "75.00%"
        assert abs(_millis(page, "p95") / 385 - 1) <= 0.021  # us: 100, 200, 300, 400 ms
        assert page.locator(".kpi:visible .kpi-label:text-is('Check runs')").count() == 1
        assert [line.get_attribute("data-region") for line in lines.all() if _drawn(line)] == ["us"]
        regions = (
            page.locator("table").filter(has_text="status now in each region").locator("tbody tr")
        )
        assert [r.inner_text().split()[0] for r in regions.all() if r.is_visible()] == ["us"]
        assert failures.first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "canary-region-us.png"), full_page=True)

        page.click(".scope-bar label[for='scope-eu']")
        assert uptime.locator(".kpi-value").inner_text() == "100%"
        assert not failures.first.is_visible()  # the failure was in us
        assert [line.get_attribute("data-region") for line in lines.all() if _drawn(line)] == ["eu"]
        page.click(".scope-bar label[for='scope-all']")
        assert uptime.locator(".kpi-value").inner_text() == "87.50%"
        assert all(_drawn(line) for line in lines.all())
        browser.close()


def test_a_phone_sees_the_figures_without_scrolling_sideways(site: Path) -> None:
    """At 390 px the overview's and status page's uptime and p95 are on screen, not behind a
    table's scroll bar, and the latency chart opens at its newest end."""

    def on_screen(cell: Any) -> bool:
        box = cell.bounding_box()
        return bool(cell.is_visible() and box and box["x"] + box["width"] <= 390 + 1)

    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto((site / "index.html").as_uri())
        row = page.locator("table.fleet tbody tr").first
        uptime, p95 = row.locator("td").nth(1), row.locator("td").nth(2)
        assert uptime.inner_text() == "87.50%" and p95.inner_text().endswith(" ms")
        assert on_screen(uptime) and on_screen(p95)
        page.goto((site / "status.html").as_uri())
        cells = page.locator("table tbody tr").first.locator("td")
        shown = [c for c in cells.all() if on_screen(c)]
        assert [c.inner_text() for c in shown[1:]] == ["87.50%"] * 3  # 24 h, 30 d, 365 d
        page.goto((site / "canary" / "default.web.html").as_uri())
        scroller = page.locator(".chart-scroll").first
        assert scroller.evaluate("e => e.scrollWidth > e.clientWidth")  # wider than a phone
        line = page.locator("svg path.line").first
        box = line.bounding_box()  # a line of a few points: no box playwright calls visible
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390  # the runs, an hour ago
        browser.close()


def test_a_region_view_lists_that_regions_failures_when_others_are_newer(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    """The view of every region shows the canary's newest failures; a region's view shows
    that region's newest, even when the other region's failures crowd them out there."""
    config_repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    older = [("eu-1", "eu", "default/web", now - timedelta(minutes=60 + i), 50.0, "fail")
             for i in range(3)]  # fmt: skip
    newer = [("us-1", "us", "default/web", now - timedelta(minutes=20 + i), 50.0, "fail")
             for i in range(12)]  # fmt: skip
    site = _built(config_repo, tmp_path, older + newer)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((site / "canary" / "default.web.html").as_uri())
        rows = page.locator("section", has_text="Recent failures").locator("tbody tr")

        def shown() -> list[str]:
            return [r.get_attribute("data-region") or "" for r in rows.all() if r.is_visible()]

        assert shown() == ["us"] * 10  # the newest ten, all us's
        page.click(".scope-bar label[for='scope-eu']")
        assert shown() == ["eu"] * 3
        page.click(".scope-bar label[for='scope-us']")
        assert shown() == ["us"] * 10
        page.click(".scope-bar label[for='scope-all']")
        assert shown() == ["us"] * 10
        browser.close()


def test_the_deployments_page_fits_a_laptop_screen(config_repo: ConfigRepo, tmp_path: Path) -> None:
    # Eight columns of evaluations and a steps table beside the weights: at 1,280 px they
    # overflowed their boxes, the figures and each reason cut off behind a scroll bar.
    config_repo.write("route.yaml", ROUTE)
    config_repo.commit()
    state = tmp_path / "state.duckdb"
    assert (
        run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve").code == 0
    )
    with duckdb.connect(str(state)) as connection:
        record_evaluation(connection)
    out = tmp_path / "site"
    assert run_cli("site", "build", "--state", state, "--out", out).code == 0
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "deployments.html").as_uri())
        assert "error rate too high" in page.locator("main").inner_text()
        boxes = page.eval_on_selector_all(
            ".table-wrap", "boxes => boxes.map(b => [b.scrollWidth, b.clientWidth])"
        )
        assert len(boxes) == 3  # weights, steps, evaluations
        assert all(scrolled <= shown + 1 for scrolled, shown in boxes), boxes
        page.screenshot(path=str(ARTIFACTS / "deployments.png"), full_page=True)
        browser.close()


def test_an_sla_report_of_five_regions_fits_a_laptop_screen(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    # The months table has a column per region besides eight of its own: at 1,280 px, with
    # five regions (the sample repository's), the last regions and the end of its caption
    # were cut off behind a scroll bar.
    regions = ["eu-west", "us-east", "ap-south", "sa-east", "af-south"]
    config_repo.write("regions.yaml", "---\n".join(region_doc(r) for r in regions))
    config_repo.write("agents.yaml", "---\n".join(agent_doc(f"{r}-1", r) for r in regions))
    canary = canary_doc("checkout", namespace="shop").replace("spec:\n", "spec:\n  slo: 99.9\n")
    config_repo.write("canaries/checkout.yaml", canary)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    out = _built(
        config_repo,
        tmp_path,
        [  # yesterday's: a month counts whole days
            (f"{region}-1", region, "shop/checkout", now - timedelta(days=1, minutes=minute),
             120.0 + minute, "pass" if minute % 7 else "fail")
            for region in regions
            for minute in range(1, 30)
        ],
    )  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "sla" / "shop.checkout.html").as_uri())
        months = page.locator("table").first
        assert months.locator("thead th").all_inner_texts()[-5:] == sorted(regions)
        shown = months.locator("tbody").inner_text()
        assert "missed" in shown and "13,793.1%" in shown  # 99.9% is far from met
        boxes = page.eval_on_selector_all(
            ".table-wrap", "boxes => boxes.map(b => [b.scrollWidth, b.clientWidth])"
        )
        assert len(boxes) == 2  # months, quarters
        assert all(scrolled <= shown + 1 for scrolled, shown in boxes), boxes
        page.screenshot(path=str(ARTIFACTS / "sla.png"), full_page=True)
        browser.close()
