"""The status site shows every result up to its build: window figures stored up to a step
boundary, plus the runs started since (the windows' open part)."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

from reconciler.sitebuild import build_site
from reconciler.store.db import Connection, open_state
from reconciler.store.refusals import Refusal, clear_refusal, latest_refusal, record_refusal
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.test_site import (
    NOW,
    SHOP,
    apply,
    fleet,
    kpi,
    near,
    quantile,
    read,
    region_row,
    store,
)

__all__ = ["fleet"]  # the fixture of test_site.py, requested by name below

PAGES = {
    "24h": "canary/web.shop.html",
    "7d": "canary/web.shop-7d.html",
    "30d": "canary/web.shop-30d.html",
}


def chart_cells(html: str) -> dict[str, list[str]]:
    """The chart's data table: slot start (HH:MM) → one cell per region."""
    table = html[html.index('<table class="data">') : html.index("</table>", html.index("data"))]
    rows = re.findall(r'<time datetime="[^"]*T(\d\d:\d\d)Z">[^<]*</time></th>(.*?)</tr>', table)
    return {at: re.findall(r"<td>([^<]*)</td>", cells) for at, cells in rows}


def test_an_outage_seconds_before_a_build_shows_in_every_figure(
    fleet: tuple[Path, Connection],
) -> None:
    """13:07: the 24-hour window is stored up to 13:00, the others up to 12:00. Two slow
    failures in us, 40 and 20 seconds before the build, count everywhere at once."""
    state, connection = fleet
    site = state.parent / "site"
    for seconds in (40, 20):
        store(
            connection, "web/shop", ("us-1", "us", 900.0, "fail"), NOW - timedelta(seconds=seconds)
        )
    build_site(connection, site, NOW)

    every = [duration for _, _, duration, _ in SHOP] + [900.0, 900.0]
    us = [d for _, region, d, _ in SHOP if region == "us"] + [900.0, 900.0]
    for window, page in PAGES.items():
        html = read(site, page)
        assert kpi(html, "Check runs") == "12", window
        assert kpi(html, f"Uptime ({window})") == "75.00%", window  # 9 of 12
        assert near(kpi(html, "p95"), quantile(every, 0.95)), window
        assert near(kpi(html, "p99"), quantile(every, 0.99)), window
        row = region_row(html, "us")
        assert row[0] == "50.00%" and row[3] == "4", window
        assert near(row[2], quantile(us, 0.95)), window
    # The 24-hour chart has the open 15-minute bucket: us's two new runs at 13:00.
    assert chart_cells(read(site, PAGES["24h"]))["13:00"] == ["—", "900.0"]
    # The 7-day chart's 2-hour slot from 12:00 holds them too.
    assert chart_cells(read(site, PAGES["7d"]))["12:00"] == ["—", "900.0"]

    index = read(site, "index.html")
    row = re.search(r'web\.shop\.html">web/shop</a></th>(.*?)</tr>', index)
    assert row and "75.00%" in row.group(1) and ">12<" in row.group(1)
    status = read(site, "status.html")
    row = re.search(r'web\.shop\.html">web/shop</a></th>(.*?)</tr>', status)
    assert row and re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1)) == ["75.00%"] * 5
    region = read(site, "region-us.html")
    row = re.search(r'web\.shop\.html">web/shop</a></th>(.*?)</tr>', region)
    assert row and "50.00%" in row.group(1)


def test_a_new_canary_has_figures_and_a_chart_a_minute_after_its_first_run(
    tmp_path: Path,
) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write(
        "all.yaml",
        region_doc("eu") + "---\n" + region_doc("us") + "---\n" + agent_doc("eu-1", "eu")
        + "---\n" + agent_doc("us-1", "us") + "---\n" + canary_doc("shop", namespace="web"),
    )  # fmt: skip
    repo.commit("one canary")
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    connection = open_state(state)
    assert connection is not None
    site = tmp_path / "site"
    with connection:
        build_site(connection, site, NOW - timedelta(minutes=2))  # no runs yet
        assert "No runs in this window." in read(site, PAGES["24h"])
        store(connection, "web/shop", ("eu-1", "eu", 40.0, "pass"), NOW - timedelta(seconds=50))
        store(connection, "web/shop", ("us-1", "us", 60.0, "pass"), NOW - timedelta(seconds=45))
        build_site(connection, site, NOW)
    for window, page in PAGES.items():
        html = read(site, page)
        assert kpi(html, "Check runs") == "2" and kpi(html, f"Uptime ({window})") == "100%", window
        assert near(kpi(html, "p95"), quantile([40.0, 60.0], 0.95)), window
        assert "No runs in this window." not in html, window
        assert re.search(r'<path class="line s0" data-region="eu" d="M\d+,40\.0h0"', html), window
        # The only point of a line is drawn again as a dot a person sees.
        assert re.search(r'<path class="dot s0" data-region="eu" d="M\d+,40\.0h0"', html), window
    assert chart_cells(read(site, PAGES["24h"]))["13:00"] == ["40.0", "60.0"]


def test_a_rebuild_with_nothing_new_rewrites_no_canary_page(
    fleet: tuple[Path, Connection],
) -> None:
    """The open part changes a page only when a run arrives for it: the pages of canaries
    without new runs stay the same files, minute after minute."""
    state, connection = fleet
    site = state.parent / "site"
    store(connection, "web/shop", ("eu-1", "eu", 33.0, "pass"), NOW - timedelta(seconds=30))
    build_site(connection, site, NOW)
    before = {p: p.stat().st_ino for p in (site / "canary").iterdir()}
    store(connection, "web/api", ("us-1", "us", 250.0, "pass"), NOW + timedelta(seconds=30))
    build_site(connection, site, NOW + timedelta(minutes=1))
    after = {p: p.stat().st_ino for p in (site / "canary").iterdir()}
    changed = sorted(p.name for p in before if before[p] != after[p])
    assert changed == [
        "web.api-30d.html",
        "web.api-365d.html",
        "web.api-7d.html",
        "web.api-90d.html",
        "web.api.html",
    ]
    assert kpi(read(site, "canary/web.api-30d.html"), "Check runs") == "3"


def test_a_refusal_polled_again_keeps_its_first_time_and_clears_on_apply(
    fleet: tuple[Path, Connection],
) -> None:
    """The banner's refusal is stored once per revision and errors: a poll that refuses the
    same commit again redraws no page; an applied revision removes the banner."""
    state, connection = fleet
    site = state.parent / "site"
    errors = ("canaries/shop.yaml:3:1: Canary web/shop: spek: unknown field", "second error")
    first = Refusal("f" * 40, "f" * 12, NOW - timedelta(minutes=2), errors, "a" * 40, "a" * 12)
    record_refusal(connection, first)
    build_site(connection, site, NOW)
    page = read(site, PAGES["7d"])
    assert "Commit <code>ffffffffffff</code> was refused" in page and "(1 more error)" in page
    assert "<code>canaries/shop.yaml:3:1: Canary web/shop: spek: unknown field</code>" in page
    assert "Still serving <code>aaaaaaaaaaaa</code>" in page
    inode = (site / PAGES["7d"]).stat().st_ino

    record_refusal(connection, dataclasses.replace(first, refused_at=NOW))  # polled again
    assert latest_refusal(connection) == first
    build_site(connection, site, NOW)
    assert (site / PAGES["7d"]).stat().st_ino == inode  # not drawn again

    clear_refusal(connection)
    build_site(connection, site, NOW)
    assert "was refused" not in read(site, PAGES["7d"]) + read(site, "index.html")


def test_a_refusal_reaches_the_sla_pages_drawn_before_it(fleet: tuple[Path, Connection]) -> None:
    """SLA pages are drawn only when their months move: a refusal after they were drawn
    still puts its banner on them, and an apply takes it off."""
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    assert "was refused" not in read(site, "sla/web.shop.html")

    refusal = Refusal("e" * 40, "e" * 12, NOW, ("canaries/shop.yaml:1:1: bad",), "a" * 40, "a" * 12)
    record_refusal(connection, refusal)
    build_site(connection, site, NOW)
    assert "Commit <code>eeeeeeeeeeee</code> was refused" in read(site, "sla/web.shop.html")

    clear_refusal(connection)
    build_site(connection, site, NOW)
    assert "was refused" not in read(site, "sla/web.shop.html")
