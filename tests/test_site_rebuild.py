"""Rebuilds of the status site: a moved window's pages follow a minute later, the rest stay
byte for byte, and each build is swapped in whole."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from markupsafe import Markup

from reconciler.core.sketch import bin_of, value_of
from reconciler.sitebuild import Report, SiteBuilder, SiteError, build_site, publish, tiered
from reconciler.sitebuild.live import refresh_live
from reconciler.sitebuild.publish import Publisher
from reconciler.sitebuild.queries import chart_tails, window_figures, window_states
from reconciler.sitebuild.tables import SHOWN_SQL, Tables
from reconciler.sitebuild.versions import (
    BLOCK,
    MANIFEST,
    Folders,
    SiteDir,
    match_spares,
    spare_size,
    write_file,
)
from reconciler.store.db import Connection, open_state
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.rows import RESULT_COLUMNS_V1
from tests.test_site import (
    API,
    NOW,
    SHOP,
    START,
    apply,
    fleet,
    kpi,
    near,
    quantile,
    read,
    state_schema,
    store,
)

__all__ = ["fleet"]  # the fixture of test_site.py, requested by name below

SHOP_PAGES = ("canary/web.shop.html", "canary/web.shop-7d.html", "canary/web.shop-30d.html")


def snapshot(site: Path) -> dict[str, tuple[bytes, int]]:
    """Every page's bytes and inode."""
    return {
        p.relative_to(site).as_posix(): (p.read_bytes(), p.stat().st_ino)
        for p in site.rglob("*.html")
    }


def window_range(html: str) -> str:
    found = re.search(r'<p class="range">([^<]*): runs from <time[^>]*>([^<]*)</time>', html)
    assert found
    return f"{found.group(1)} from {found.group(2)}"


def test_a_moved_window_is_drawn_the_next_minute_and_other_pages_stay(
    fleet: tuple[Path, Connection],
) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)  # 13:07: 24 hours stored to 13:00
    store(connection, "web/shop", ("eu-1", "eu", 500.0, "pass"), NOW + timedelta(seconds=90))
    build_site(connection, site, NOW + timedelta(minutes=3))  # 13:10: the run shows at once
    every = [duration for _, _, duration, _ in SHOP] + [500.0]
    shop = read(site, SHOP_PAGES[0])
    assert kpi(shop, "Check runs") == "11" and kpi(shop, "Uptime (24h)") == "90.90%"
    assert near(kpi(shop, "p99"), quantile(every, 0.99))
    build_site(connection, site, NOW + timedelta(minutes=8))  # 13:15: a build a minute
    before = snapshot(site)

    # 13:16: the 24-hour window moves to end at 13:15. Its figures are computed and kept
    # aside: the pages still show the previous window, whole, and its open part.
    staged = build_site(connection, site, NOW + timedelta(minutes=9))
    assert staged.staged == ["24h"] and staged.windows == []
    shop = read(site, SHOP_PAGES[0])
    assert window_range(shop) == "24 hours from 2026-11-19 13:00 UTC"
    assert kpi(shop, "Check runs") == "11"
    middle = snapshot(site)
    assert all(middle[page] == before[page] for page in before if page.startswith("canary/"))

    # 13:17: they are published, and only the pages showing that window change.
    published = build_site(connection, site, NOW + timedelta(minutes=10))
    assert published.windows == ["24h"] and published.staged == []
    shop = read(site, SHOP_PAGES[0])
    assert window_range(shop) == "24 hours from 2026-11-19 13:15 UTC"
    assert kpi(shop, "Check runs") == "11" and kpi(shop, "Uptime (24h)") == "90.90%"
    assert near(kpi(shop, "p95"), quantile(every, 0.95))
    after = snapshot(site)
    for page in ("canary/web.shop-7d.html", "canary/web.shop-30d.html", "canary/web.api-7d.html"):
        assert after[page] == middle[page], page  # same bytes, same file: not rewritten
    assert after["canary/web.api.html"] != middle["canary/web.api.html"]  # its window moved


def test_each_build_is_swapped_in_whole(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    versions = state.parent / ".site.versions"
    build_site(connection, site, NOW)
    assert site.is_symlink() and os.readlink(site) == ".site.versions/000001"
    first = snapshot(site)

    later = NOW
    for minute in (1, 2, 3):  # every build writes the overview (its build time changed)
        later = NOW + timedelta(minutes=minute)
        store(connection, "web/api", ("us-1", "us", 50.0 * minute, "fail"), later)
        build_site(connection, site, later + timedelta(seconds=30))
    # The link names the newest version; the previous one stays for readers that resolved
    # the link before the swap; older ones are retired.
    assert os.readlink(site) == ".site.versions/000004"
    assert sorted(p.name for p in versions.iterdir() if p.name.isdigit()) == ["000003", "000004"]
    pages = len(first)
    assert len(list((versions / "spare").iterdir())) <= pages + 1
    # Pages that never changed are the very same files as in the first build.
    now = snapshot(site)
    assert now["canary/web.shop-7d.html"] == first["canary/web.shop-7d.html"]
    assert now["canary/web.api.html"] != first["canary/web.api.html"]  # its failures
    assert not list(state.parent.glob(".site.link-*")) and not list(site.rglob("*.tmp"))


def test_a_site_built_before_versions_is_adopted(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    site.mkdir()
    (site / ".sitebuild.json").write_text(json.dumps({"version": "old", "pages": {}}))
    (site / "index.html").write_text("old")
    build_site(connection, site, NOW)
    assert site.is_symlink() and "Fleet overview" in read(site, "index.html")

    elsewhere = state.parent / "elsewhere"
    elsewhere.mkdir()
    link = state.parent / "linked"
    link.symlink_to(elsewhere)
    with pytest.raises(SiteError, match="did not make"):
        build_site(connection, link, NOW)
    assert link.resolve() == elsewhere.resolve() and not any(elsewhere.iterdir())


def test_chart_values_read_as_python_formats_them(fleet: tuple[Path, Connection]) -> None:
    """Chart points are formatted by DuckDB when stored: the digits must be Python's."""
    state, connection = fleet
    tricky = [0.25, 0.35, 0.05, 1.05, 2.675, 12.75, 99.95, 1e-7, 123456.75, 5e9, 1 / 3]
    shown = connection.execute(
        f"SELECT {SHOWN_SQL.format('x')} FROM (SELECT unnest($v::DOUBLE[]) AS x)", {"v": tricky}
    ).fetchall()
    assert [text for (text,) in shown] == [f"{value:.1f}" for value in tricky]

    site = state.parent / "site"
    build_site(connection, site, NOW)
    stored = connection.execute(
        "SELECT p95 FROM site_chart WHERE win = '24h' AND parent = 'web/shop' AND region = 'eu'"
        " ORDER BY slot"
    ).fetchall()
    page = read(site, SHOP_PAGES[0])
    table = page[page.index('<table class="data">') : page.index("</table>", page.index("data"))]
    cells = re.findall(r"</time></th><td>([^<]*)</td>", table)  # eu is the first column
    assert cells == [f"{p95:.1f}" for (p95,) in stored] and cells


def test_a_one_off_build_publishes_a_moved_window_at_once(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    build_site(connection, site, NOW)
    report = build_site(connection, site, NOW + timedelta(hours=1))  # not a minute later
    assert report.windows == ["24h", "7d"] and report.staged == []
    assert window_range(read(site, SHOP_PAGES[0])) == "24 hours from 2026-11-19 14:00 UTC"


@pytest.mark.parametrize("ahead", [False, True], ids=["staged-in-build", "staged-ahead"])
def test_staged_and_moved_figures_equal_figures_from_scratch(
    fleet: tuple[Path, Connection], ahead: bool
) -> None:
    """Minute by minute across midnight, each window staged and then published, moved by
    what entered and left: the stored figures equal a build from scratch. Staged inside the
    build of the minute a window moved (a build a minute from the CLI), or after it, between
    builds (the server), the pages and figures are the same."""
    state, connection = fleet
    site = state.parent / "site"
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    store(connection, "web/shop", ("eu-2", "eu", 42.0, "fail"), midnight - timedelta(minutes=2))
    staged, published, runs = [], [], set()
    for minute in range(10):
        moment = midnight + timedelta(minutes=minute, seconds=30)
        if minute == 4:
            store(connection, "web/api", ("us-1", "us", 7.0, "pass"), moment)
        builder = SiteBuilder(site, stage_ahead=ahead)
        report = builder.build(connection, moment)
        # Staged ahead, the build itself never computes a moved window's figures.
        staged.append(builder.stage_ahead(connection, moment) if ahead else report.staged)
        assert not (ahead and report.staged)
        published.append(report.windows)
        runs |= {kpi(read(site, page), "Check runs") for page in SHOP_PAGES}
    assert runs == {"11"}  # the 23:58 run counts in every window, staged or not
    assert staged[1:] == [["24h"], [], ["7d"], [], [], [], [], ["30d"], []]
    assert published[1:] == [[], ["24h"], [], ["7d"], [], [], [], [], ["30d"]]
    stored = Tables()
    refresh_live(connection, stored)  # the windows' open parts, as the last build saw them
    live = window_figures(connection, stored)
    tails = chart_tails(connection, stored, window_states(connection, stored))
    build_site(connection, state.parent / "scratch", moment + timedelta(seconds=30), temporary=True)
    schema = state_schema(connection)
    scratch = Tables("temp")
    assert live == window_figures(connection, scratch)
    assert tails == chart_tails(connection, scratch, window_states(connection, scratch)) and tails
    for query in (
        "SELECT * FROM {}.site_window",
        "SELECT * FROM {}.site_chart",
        # Staged ahead, a window's series are joined before its figures are published.
        "SELECT * FROM {}.site_series",
        "SELECT win, parent, region, bin, n FROM {0}.site_whist JOIN {0}.site_keys USING (id)",
    ):
        stored = connection.execute(f"{query.format(schema)} ORDER BY ALL").fetchall()
        assert stored == connection.execute(f"{query.format('temp')} ORDER BY ALL").fetchall()
        assert stored, query
    assert kpi(read(site, "canary/web.shop-7d.html"), "Check runs") == "11"


def test_a_late_run_after_staging_is_in_the_published_chart(
    fleet: tuple[Path, Connection],
) -> None:
    """A window's chart series are joined when its figures are staged; a run that arrives
    late for a slot inside the new bounds, before they are published, is in the published
    chart all the same (the series are joined again, as a build from scratch has them)."""
    state, connection = fleet
    site = state.parent / "site"
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    builder = SiteBuilder(site, stage_ahead=True)
    for minute in (-1, 0, 1):  # 24 h moves at 00:01 (staged), published at 00:02
        moment = midnight + timedelta(minutes=minute, seconds=30)
        builder.build(connection, moment)
        staged = builder.stage_ahead(connection, moment)
    assert staged == ["24h"]
    # Started at 23:40, inside the staged 24 hours, slower than anything the slot had, and
    # received now.
    moment = midnight + timedelta(minutes=2, seconds=30)
    store(connection, "web/shop", ("eu-1", "eu", 4321.0, "pass"), midnight - timedelta(minutes=20))
    connection.execute(
        "UPDATE results SET received_at = $now WHERE duration_ms = 4321.0",
        {"now": moment - timedelta(seconds=5)},
    )
    report = builder.build(connection, moment)
    assert "24h" in report.windows  # with every window the late run is in, recomputed
    build_site(connection, state.parent / "scratch", moment, temporary=True)
    query = "SELECT * FROM {}.site_series WHERE win = '24h' ORDER BY ALL"
    stored = connection.execute(query.format(state_schema(connection))).fetchall()
    assert stored == connection.execute(query.format("temp")).fetchall()
    assert any("4321.0" in row[5] for row in stored)


def test_a_series_with_a_gap_is_drawn_in_pieces(fleet: tuple[Path, Connection]) -> None:
    state, connection = fleet
    site = state.parent / "site"
    store(connection, "web/shop", ("us-1", "us", 65.0, "pass"), START + timedelta(hours=3))
    build_site(connection, site, NOW)
    page = read(site, SHOP_PAGES[0])
    paths = re.findall(r'<path class="line (s\d)" data-region="[^"]*" d="([^"]*)"', page)
    us = dict(paths)["s1"]  # regions in legend order: eu, us
    assert us.count("M") == 2 and us.endswith("h0")  # 01:00-01:15, then 04:00 alone
    # Points with no neighbour again as dots (both of us's, none of eu's, a line).
    assert "L" in dict(paths)["s0"] and "h0" not in dict(paths)["s0"]
    dots = re.findall(r'<path class="dot (s\d)" data-region="[^"]*" d="([^"]*)"', page)
    assert dots == [("s1", us)]
    rows = re.findall(r'<time datetime="2026-11-20T(\d\d:\d\d)Z">[^<]*</time></th>(.*?)</tr>', page)
    cells = {at: re.findall(r"<td>([^<]*)</td>", row) for at, row in rows}
    assert cells["04:00"] == ["—", "65.0"]
    assert cells["01:00"][1] == f"{quantile([50.0, 60.0], 0.95):.1f}" == "59.5"
    assert cells["01:30"] == ["97.0", "—"]


def test_canary_pages_filled_from_skeletons_are_what_jinja_draws(
    fleet: tuple[Path, Connection],
) -> None:
    """Canary pages are drawn by filling a skeleton of their template (`Page.flat`): each
    must be byte for byte what Jinja renders from the same context, in every shape the
    fleet has (two regions with a selector, one region without, charts, no charts)."""
    state, connection = fleet
    site = state.parent / "site"
    builder = SiteBuilder(site)
    moment = NOW + timedelta(days=1)  # 7 d has runs, 24 h none: pages without a chart too
    for now in (NOW, moment):
        builder.refresh(connection, now)
        build = builder.collect(connection, now)
        builder.publish(build)
        environment = builder.publisher.environment
        flat = [page for page in build.pages if page.flat]
        assert len(flat) == 10  # 2 canaries x 5 windows
        for page in flat:
            drawn = environment.get_template(page.template).render(page.context())
            # Pages are padded with spaces to whole blocks (`versions.write_file`).
            assert read(site, page.path).rstrip(" \n") == drawn.rstrip(" \n"), page.path
    assert "No runs in this window." in read(site, SHOP_PAGES[0])
    assert "<svg" in read(site, SHOP_PAGES[1])


def test_a_skeleton_prints_values_as_jinja_does(tmp_path: Path) -> None:
    """Text is escaped and markup is not; a false value (None, 0, "") keeps its own shape."""
    templates = tmp_path / "site" / "templates"
    templates.mkdir(parents=True)
    (tmp_path / "site" / "static").mkdir()
    (templates / "flat.html").write_text(
        "<h1>{{ title }}</h1>{% if note %}<p>{{ note }}</p>{% else %}<p>none</p>{% endif %}\n"
        "{{ count }} {{ body }}|{{ title }}\n"
    )
    environment = Publisher(tmp_path / "out", tmp_path / "site").environment
    contexts: list[dict[str, object]] = [
        {"title": "a <b> & 'c'", "note": Markup("<em>x</em>"), "count": 3, "body": 'é"<'},
        {"title": "plain", "note": None, "count": 0, "body": Markup("<i>m</i>")},
        {"title": "", "note": "", "count": 7, "body": None},
    ]
    previous, publish._ENVIRONMENT = publish._ENVIRONMENT, environment
    try:
        for context in contexts:
            assert publish._fill("flat.html", context) == environment.get_template(
                "flat.html"
            ).render(context)
    finally:
        publish._ENVIRONMENT = previous
        publish._SKELETONS.clear()


def _history(connection: Connection, runs: int, until: datetime) -> None:
    """`runs` passing runs of web/shop at 50 ms on each agent, 30 s apart up to `until`."""
    for agent, region in (("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")):
        connection.execute(
            f"""INSERT INTO results ({RESULT_COLUMNS_V1})
                SELECT $agent, $region, 'web/shop@' || $agent, 'web/shop', 'check', 'http',
                       started, 50.0, 'pass', 200, NULL, NULL, started + INTERVAL 2 SECOND
                FROM (SELECT $until - to_seconds(30 * i) AS started FROM range($runs) t(i))""",
            {"agent": agent, "region": region, "until": until, "runs": runs},
        )


def test_long_window_pages_are_drawn_only_when_what_they_show_changes(
    fleet: tuple[Path, Connection],
) -> None:
    """A new run changes the 24-hour, 7-day and 30-day pages (runs, last run), but not what
    the 90- and 365-day pages print (runs in three digits, uptime to 0.01%, the same p95):
    those are not drawn again. They leave out the last run and recent failures, linking to
    the 24-hour page."""
    state, connection = fleet
    site = state.parent / "site"
    _history(connection, 1_100, NOW - timedelta(minutes=7))
    build_site(connection, site, NOW)
    before = snapshot(site)
    long_pages = [f"canary/web.shop-{name}.html" for name in ("90d", "365d")]
    page = read(site, long_pages[0])
    assert kpi(page, "Check runs") == "3.31 k" and kpi(page, "Uptime (90d)") == "99.96%"
    assert "Last run" not in page and "Degraded (24h)" not in page
    assert 'href="web.shop.html">24-hour page</a>' in page
    assert 'kpi-label">Last run' in read(site, SHOP_PAGES[0])

    store(connection, "web/shop", ("eu-1", "eu", 50.0, "pass"), NOW + timedelta(seconds=30))
    report = build_site(connection, site, NOW + timedelta(minutes=1))
    assert report.windows == [] and report.staged == []
    after = snapshot(site)
    for shown in SHOP_PAGES:
        assert after[shown] != before[shown], shown  # 3,311 runs
    for kept in long_pages:
        assert after[kept] == before[kept], kept  # same bytes, same file: not drawn
    assert kpi(read(site, SHOP_PAGES[0]), "Check runs") == "3,311"


def _today_points(site: Path, page: str, day: datetime) -> dict[str, str]:
    """The point of `day` on a long window's chart, by region, as its data table shows it."""
    table = read(site, page).split('<table class="data">')[1]
    regions = re.findall(r'<th scope="col">([^<]*) \(ms\)</th>', table)
    rows = dict(re.findall(r'<time datetime="(\d{4}-\d\d-\d\d)T00:00Z">.*?</th>(.*?)</tr>', table))
    return dict(zip(regions, re.findall(r"<td>([^<]*)</td>", rows[f"{day:%Y-%m-%d}"]), strict=True))


def _day_point(durations: list[float]) -> str:
    """The chart point of a day with these runs: their p95 by the histograms' rule (each run
    as its bin's value, `core/sketch.py`), to two significant digits."""
    values = sorted(value_of(bin_of(duration)) for duration in durations)
    p95 = quantile(values, 0.95)
    return f"{round(p95, 1 - math.floor(math.log10(p95))):.1f}"


# The day points' key (`tiered.POINT_KEY_SQL`) as it is, and one that every canary and
# region of a day share: the hash collision that the points are computed again for.
DAY_POINT_KEYS = pytest.mark.parametrize(
    "point_key", [tiered.POINT_KEY_SQL, "hash(day)"], ids=["hashed", "colliding-hash"]
)


@DAY_POINT_KEYS
def test_the_long_charts_point_of_today_counts_every_run_of_the_day(
    fleet: tuple[Path, Connection], point_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 90- and 365-day charts' point of today is the p95 of every run of the day: those
    of the day's closed 2-hour blocks (the daily histogram) and the runs since, at every
    build: the open block's runs, a region whose first run of the day came after the last
    block closed, and the runs of a block that closed between two builds."""
    monkeypatch.setattr(tiered, "POINT_KEY_SQL", point_key)
    state, connection = fleet
    site = state.parent / "site"
    day = NOW.replace(hour=0, minute=0)
    builder = SiteBuilder(site, stage_ahead=True)
    runs: dict[tuple[str, str], list[float]] = {
        ("web/shop", "eu"): [d for _, region, d, _ in SHOP if region == "eu"],
        ("web/shop", "us"): [d for _, region, d, _ in SHOP if region == "us"],
        ("web/api", "us"): [d for _, _, d, _ in API],
    }

    def run(canary: str, agent: str, region: str, duration: float, minute: int) -> None:
        store(
            connection, canary, (agent, region, duration, "pass"), day + timedelta(minutes=minute)
        )
        runs.setdefault((canary, region), []).append(duration)

    def check(minute: int) -> None:
        builder.build(connection, day + timedelta(minutes=minute))
        builder.stage_ahead(connection, day + timedelta(minutes=minute))
        builder.tidy()
        for canary in ("web/shop", "web/api"):
            shown = _today_points(site, f"canary/{canary.replace('/', '.')}-90d.html", day)
            expected = {region: _day_point(d) for (c, region), d in runs.items() if c == canary}
            assert shown == expected, (minute, canary)
            assert _today_points(site, f"canary/{canary.replace('/', '.')}-365d.html", day) == shown

    for minute, duration in ((14 * 60, 700.0), (15 * 60, 820.0), (19 * 60 + 50, 910.0)):
        run("web/shop", "us-1", "us", duration, minute)  # in blocks that closed by 20:00
    run("web/shop", "us-1", "us", 1300.0, 20 * 60 + 10)  # after the last block closed
    run("web/api", "eu-1", "eu", 45.0, 20 * 60 + 12)  # a region's first run of the day
    check(20 * 60 + 30)
    run("web/shop", "eu-2", "eu", 2400.0, 20 * 60 + 31)  # the same block still open
    run("web/api", "eu-1", "eu", 47.0, 20 * 60 + 31)
    check(20 * 60 + 32)
    run("web/shop", "us-1", "us", 3100.0, 21 * 60 + 40)
    check(22 * 60 + 5)  # the block of 20:00-22:00 closed between the builds
    run("web/shop", "eu-1", "eu", 5.0, 22 * 60 + 6)
    check(22 * 60 + 7)


@DAY_POINT_KEYS
def test_yesterday_stays_on_the_long_charts_until_their_windows_take_it(
    fleet: tuple[Path, Connection], point_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the minutes after midnight, before the 90- and 365-day windows move to the new
    day, their charts show yesterday (read off its whole daily histogram, which a builder
    kept from build to build keeps) and today (the runs since midnight)."""
    monkeypatch.setattr(tiered, "POINT_KEY_SQL", point_key)
    state, connection = fleet
    site = state.parent / "site"
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    builder = SiteBuilder(site, stage_ahead=True)
    store(connection, "web/shop", ("us-1", "us", 480.0, "pass"), midnight + timedelta(minutes=2))
    for moment in (
        midnight - timedelta(minutes=30),
        *(midnight + timedelta(minutes=m) for m in (5, 6)),
    ):
        builder.build(connection, moment)
        builder.stage_ahead(connection, moment)
        builder.tidy()
    for name in ("90d", "365d"):
        table = read(site, f"canary/web.shop-{name}.html").split('<table class="data">')[1]
        days = dict(
            re.findall(r'<time datetime="(\d{4}-\d\d-\d\d)T00:00Z">.*?</th>(.*?)</tr>', table)
        )
        assert f"{midnight:%Y-%m-%d}" in days and "<td>480.0</td>" in days[f"{midnight:%Y-%m-%d}"]
        yesterday = _today_points(site, f"canary/web.shop-{name}.html", midnight - timedelta(1))
        assert yesterday == {
            region: _day_point([d for _, r, d, _ in SHOP if r == region]) for region in ("eu", "us")
        }, name


@pytest.mark.parametrize("ahead", [False, True], ids=["staged-in-build", "staged-ahead"])
def test_tiered_windows_moved_every_two_hours_equal_figures_from_scratch(
    fleet: tuple[Path, Connection], ahead: bool
) -> None:
    """The 90- and 365-day windows end at the last 2-hour boundary: across midnight (the
    day's blocks become a day of the per-day tier, a day leaves) and the next boundary,
    minute by minute, staged and then published, their stored figures, histograms and
    chart points equal a build from scratch, and pages count every run."""
    state, connection = fleet
    site = state.parent / "site"
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    store(connection, "web/shop", ("eu-2", "eu", 42.0, "fail"), midnight - timedelta(minutes=2))
    store(connection, "web/shop", ("us-1", "us", 61.0, "pass"), midnight + timedelta(minutes=70))
    # A run on the day that leaves the 90-day window at midnight (the 365-day one keeps it).
    store(
        connection, "web/shop", ("eu-1", "eu", 9.0, "pass"), midnight - timedelta(days=90, hours=-1)
    )
    build_site(connection, site, midnight - timedelta(minutes=30))  # the per-day tier filled
    staged: list[str] = []
    minutes = [*range(9, 16), *range(120 + 9, 120 + 16)]
    for minute in minutes:
        moment = midnight + timedelta(minutes=minute, seconds=30)
        if minute == 130:
            store(connection, "web/api", ("us-1", "us", 7.0, "pass"), moment)
        builder = SiteBuilder(site, stage_ahead=ahead)
        report = builder.build(connection, moment)
        staged += builder.stage_ahead(connection, moment) if ahead else report.staged
        assert kpi(read(site, "canary/web.shop-365d.html"), "Check runs") == "13"
    assert kpi(read(site, "canary/web.shop-90d.html"), "Check runs") == "12"
    assert staged.count("90d") == 2 and staged.count("365d") == 2
    stored = Tables()
    refresh_live(connection, stored)
    live = window_figures(connection, stored)
    tails = chart_tails(connection, stored, window_states(connection, stored))
    build_site(connection, state.parent / "scratch", moment, temporary=True)
    schema = state_schema(connection)
    scratch = Tables("temp")
    assert live == window_figures(connection, scratch)
    assert tails == chart_tails(connection, scratch, window_states(connection, scratch))
    tiered = "win IN ('90d', '365d')"
    for query in (
        "SELECT * FROM {0}.site_window WHERE " + tiered,
        "SELECT * FROM {0}.site_chart WHERE " + tiered,
        "SELECT win, parent, region, bin, n FROM {0}.site_whist JOIN {0}.site_keys USING (id) "
        "WHERE " + tiered,
    ):
        main = connection.execute(f"{query.format(schema)} ORDER BY ALL").fetchall()
        assert main == connection.execute(f"{query.format('temp')} ORDER BY ALL").fetchall()
        assert main, query
    ends = {w: s.end for w, s in window_states(connection, Tables()).items()}
    assert ends["90d"] == ends["365d"] == int((midnight + timedelta(hours=2)).timestamp())


def test_the_sla_pages_of_a_new_day_are_drawn_between_builds(
    fleet: tuple[Path, Connection],
) -> None:
    """After midnight the SLA months count one more day. A builder staging ahead (the
    server's) draws their pages right then, between builds (`draw_ahead`), and the next
    build, whose minute has enough else to draw, leaves them as they are."""
    state, connection = fleet
    site = state.parent / "site"
    builder = SiteBuilder(site, stage_ahead=True)
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=2)
    page = "sla/web.shop.html"
    day = f"{midnight:%Y-%m-%d} 00:00 UTC"

    drawn = []
    for moment in (midnight - timedelta(days=1), midnight - timedelta(minutes=2), midnight):
        builder.build(connection, moment)
        assert day not in read(site, page)
        builder.stage_ahead(connection, moment)
        drawn.append(builder.draw_ahead())
        builder.tidy()
    assert drawn[-1] == 4  # web/api's and web/shop's page and table
    assert day in read(site, page)
    inode = (site / page).stat().st_ino
    assert builder.draw_ahead() == 0  # drawn once

    report = builder.build(connection, midnight + timedelta(minutes=1))
    assert report.published.rendered > 0
    assert (site / page).stat().st_ino == inode


def test_a_late_run_of_last_month_reaches_the_sla_page_of_a_kept_builder(
    fleet: tuple[Path, Connection],
) -> None:
    """The builder keeps the SLA months from build to build; a run of last month received
    today makes staging count that month again, and its page shows it."""
    state, connection = fleet
    site = state.parent / "site"
    builder = SiteBuilder(site, stage_ahead=True)
    builder.build(connection, NOW)
    builder.stage_ahead(connection, NOW)
    page = "sla/web.shop.html"
    assert "October 2026" not in read(site, page)  # counted to today: no results yet

    started = NOW - timedelta(days=30)
    store(connection, "web/shop", ("eu-1", "eu", 12.0, "pass"), started)
    connection.execute("UPDATE results SET received_at = ? WHERE started_at = ?", [NOW, started])
    # A server's next two minutes: staging counts a month a call, newest first. The run
    # of October makes November due too (never counted: it ended before the first run),
    # and November goes first.
    for minutes in (1, 2):
        later = NOW + timedelta(minutes=minutes)
        builder.build(connection, later)
        builder.stage_ahead(connection, later)
        builder.draw_ahead()

    october = re.search(r"October 2026.*?</th><td>([^<]*)</td>", read(site, page))
    assert october is not None and october.group(1) == "1"


def test_a_builder_kept_between_builds_draws_what_a_fresh_one_draws(
    fleet: tuple[Path, Connection],
) -> None:
    """The server keeps one builder, which keeps the windows' histograms and chart series
    from build to build (`kept.py`). Minute by minute across midnight, as each window is
    staged and published, with runs on time, late and of a region new to a canary, its
    pages are byte for byte those a fresh builder draws from a twin of the state file."""
    state, connection = fleet
    connection.execute("CHECKPOINT")
    shutil.copyfile(state, state.parent / "twin.duckdb")
    twin = open_state(state.parent / "twin.duckdb")
    assert twin is not None
    server = SiteBuilder(state.parent / "kept", stage_ahead=True)
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    # Both canaries run every minute (every chart is drawn, its window's series read
    # whole), a few runs fail, one arrives 40 minutes late, one is web/api's first in eu.
    on_time, late = timedelta(0), -timedelta(minutes=40)
    arrivals = {
        -1: [("web/shop", ("eu-2", "eu", 42.0, "fail"), on_time)],
        5: [("web/shop", ("eu-1", "eu", 7.0, "pass"), late)],
        9: [("web/api", ("eu-1", "eu", 0.4, "pass"), on_time)],
    }
    builds = 0
    for minute in range(-2, 12):
        moment = midnight + timedelta(minutes=minute, seconds=30)
        runs = [
            ("web/shop", ("us-1", "us", 100.0 + 90 * (minute % 4), "pass"), on_time),
            ("web/api", ("us-1", "us", 20.0 + minute, "pass" if minute % 5 else "fail"), on_time),
            *arrivals.get(minute, []),
        ]
        for canary, run, shift in runs:
            for target in (connection, twin):
                store(target, canary, run, moment - timedelta(seconds=20) + shift)
        server.build(connection, moment)
        server.stage_ahead(connection, moment)
        server.draw_ahead()
        server.tidy()
        fresh = SiteBuilder(state.parent / "fresh", stage_ahead=True)
        fresh.build(twin, moment)
        fresh.stage_ahead(twin, moment)
        fresh.draw_ahead()
        builds += 1
        kept_pages = snapshot(state.parent / "kept")
        fresh_pages = snapshot(state.parent / "fresh")
        assert kept_pages.keys() == fresh_pages.keys()
        for page, (html, _) in kept_pages.items():
            assert html == fresh_pages[page][0], (minute, page)
    # Most builds took the rows kept: a read per window, and one per move of it.
    assert 0 < server.kept.reads < builds * 3
    assert kpi(read(state.parent / "kept", "canary/web.api.html"), "Check runs") != "0"


def build_minutes(builder: SiteBuilder, connection: Connection, minutes: int) -> None:
    """A run of web/shop on eu-1 each minute from NOW, and a build 30 s after it, each
    retiring finished before the next (as a minute between a server's builds leaves it)."""
    for minute in range(minutes):
        later = NOW + timedelta(minutes=minute)
        store(connection, "web/shop", ("eu-1", "eu", 20.0 + minute, "pass"), later)
        builder.build(connection, later + timedelta(seconds=30))
        builder.publisher.settle()


class MidnightBuild(NamedTuple):
    minute: int  # from midnight
    staged: list[str]  # the windows staged after the build before
    report: Report
    reads: int  # the values the build read into the builder's `kept`


def builds_around_midnight(server: SiteBuilder, connection: Connection) -> Iterator[MidnightBuild]:
    """The minutes from 23:58 to 00:05 as a server goes: a run of web/shop on us-1, a build,
    then what it does between builds (`stage_ahead`, `draw_ahead`, `tidy`). Yields each
    build before the work between builds."""
    midnight = NOW.replace(hour=0, minute=0) + timedelta(days=1)
    staged: list[str] = []
    for minute in range(-2, 6):
        moment = midnight + timedelta(minutes=minute, seconds=30)
        store(connection, "web/shop", ("us-1", "us", 100.0 + minute, "pass"), moment)
        reads = server.kept.reads
        report = server.build(connection, moment)
        yield MidnightBuild(minute, staged, report, server.kept.reads - reads)
        staged = server.stage_ahead(connection, moment)
        server.draw_ahead()
        server.tidy()


def test_the_build_publishing_a_staged_window_reads_nothing_it_keeps(
    fleet: tuple[Path, Connection],
) -> None:
    """A window's move is staged between builds (`stage_ahead`), which also reads its moved
    histogram and its next chart series: the build publishing them reads neither again."""
    state, connection = fleet
    server = SiteBuilder(state.parent / "kept", stage_ahead=True)
    staged_then_published = []
    for minute, staged, report, reads in builds_around_midnight(server, connection):
        if staged:
            assert set(staged) <= set(report.windows), (minute, staged, report.windows)
            staged_then_published.append((minute, reads))
    # 24 h is staged at 00:01 and 7 d at 00:03, each published the minute after.
    assert staged_then_published and all(reads == 0 for _, reads in staged_then_published)


def test_the_build_publishing_a_staged_window_draws_its_charts_from_heads_drawn_ahead(
    fleet: tuple[Path, Connection],
) -> None:
    """Between builds, `tidy` draws the stored part of a staged window's charts from the
    series `stage_ahead` read: the build publishing the window hands them to its pages,
    rather than drawing every chart of the window whole."""
    state, connection = fleet
    server = SiteBuilder(state.parent / "kept", stage_ahead=True)
    published: list[tuple[int, str, bool]] = []
    for minute, staged, _, _ in builds_around_midnight(server, connection):
        assert server.spent is not None
        drawn_ahead = {window for window, _ in server.spent.snapshot.heads}
        published += [(minute, window, window in drawn_ahead) for window in staged]
    # 24 h is staged at 00:01 and 7 d at 00:03, each published the minute after.
    assert {window for _, window, _ in published} >= {"24h", "7d"}
    assert all(ahead for _, _, ahead in published), published


def test_a_kept_builder_shows_the_checks_of_the_revision_applied_since(
    tmp_path: Path,
) -> None:
    """A builder keeps each canary's checks section between builds (`KeptSections`); a check
    renamed by an apply shows on the next build's pages, and the old name is gone."""
    repo = ConfigRepo(tmp_path / "config")
    repo.write("fleet.yaml", region_doc("eu") + "---\n" + agent_doc("eu-1", "eu"))
    repo.write("shop.yaml", canary_doc("shop", namespace="web"))
    repo.commit("shop")
    state, site = tmp_path / "state.duckdb", tmp_path / "site"
    apply(repo, state)
    builder = SiteBuilder(site, stage_ahead=True)

    def build(moment: datetime) -> None:
        connection = open_state(state)
        assert connection is not None
        try:
            builder.build(connection, moment)
            builder.stage_ahead(connection, moment)
        finally:
            connection.close()
        builder.tidy()

    build(NOW)
    assert "<code>check</code>" in read(site, "canary/web.shop.html")
    renamed = canary_doc("shop", namespace="web").replace("name: check", "name: home")
    repo.write("shop.yaml", renamed)
    repo.commit("rename the check")
    apply(repo, state)
    build(NOW + timedelta(minutes=1))
    for page in SHOP_PAGES:
        html = read(site, page)
        assert "<code>home</code>" in html and "<code>check</code>" not in html, page


def test_a_server_builder_keeps_a_spare_file_for_every_page(
    fleet: tuple[Path, Connection],
) -> None:
    """A builder staging ahead (the server's) makes the spares up to one a page after each
    publish, of the lengths of the pages it wrote: a minute that draws more pages than were
    retired (the first of a day) still writes every page over a spare. The pages are the
    same as a one-off build's."""
    state, connection = fleet
    site, versions = state.parent / "site", state.parent / ".site.versions"
    builder = SiteBuilder(site, stage_ahead=True)
    build_minutes(builder, connection, 4)
    pages = json.loads((site / MANIFEST).read_text())["pages"]
    spares = list((versions / "spare").iterdir())
    assert len(spares) == len(pages)
    made = [p for p in spares if "-fill." in p.name]
    assert made and all(p.read_bytes() == b" " * spare_size(p.name) for p in made)

    # One-off builds (`reconcile site build`), the third retiring the first's version: they
    # keep the spares that retiring leaves and make none.
    one_off = state.parent / "one-off"
    for minute in (1, 2, 3):
        build_site(connection, one_off, NOW + timedelta(minutes=minute, seconds=30))
    kept_pages, fresh_pages = snapshot(site), snapshot(one_off)
    # The same canary pages (SLA pages keep the time they were drawn at), but for the spaces
    # a page written over a longer spare ends with.
    assert {p: b.rstrip() for p, (b, _) in kept_pages.items() if p.startswith("canary/")} == {
        p: b.rstrip() for p, (b, _) in fresh_pages.items() if p.startswith("canary/")
    }
    one_off_spares = [p.name for p in (state.parent / ".one-off.versions" / "spare").iterdir()]
    assert one_off_spares and not any("-fill." in name for name in one_off_spares)


def test_spares_are_made_like_the_files_the_last_build_wrote(tmp_path: Path) -> None:
    """Made up after the retiring: as many as the limit allows, each as long as one of the
    files the newest version has alone (those its build wrote), none like a linked one."""
    site = SiteDir(tmp_path / "site")
    old, current, new = (site.store / f"00000{n}" for n in (1, 2, 3))
    for version in (old, current, new):
        (version / "canary").mkdir(parents=True)
    (old / "canary" / "kept.html").write_bytes(b"k" * 300)
    for version in (current, new):
        os.link(old / "canary" / "kept.html", version / "canary" / "kept.html")
    (old / "canary" / "gone.html").write_bytes(b"g" * 100)
    (current / "canary" / "before.html").write_bytes(b"c" * 2048)
    (new / "canary" / "a.html").write_bytes(b"a" * 4096)
    (new / "canary" / "b.html").write_bytes(b"b" * 8192)

    site.prune([current, new], limit=6, fill=True)
    site.settle()

    spares = site.spares()
    assert len(spares) == 6 and not old.exists()
    assert [spare_size(name) for name in spares if "-fill." not in name] == [100]  # gone.html
    assert {spare_size(name) for name in spares if "-fill." in name} == {4096, 8192}


def test_spares_are_made_up_when_no_version_is_retired(tmp_path: Path) -> None:
    """A build after one that wrote nothing (it kept the current version, and retired the
    one before) has no version to retire: the spares it used are made up all the same, or
    the next build writes its pages into new files (up to 1.5 ms each on ext4)."""
    site = SiteDir(tmp_path / "site")
    current, new = (site.store / f"00000{n}" for n in (1, 2))
    for version in (current, new):
        (version / "canary").mkdir(parents=True)
    (new / "canary" / "a.html").write_bytes(b"a" * 4096)

    site.prune([current, new], limit=3, fill=True)
    site.settle()

    assert sorted(spare_size(name) for name in site.spares()) == [4096, 4096, 4096]


@pytest.mark.parametrize("spare", [b"x" * 100, b"y" * 5, b"z" * 11])
def test_a_page_written_into_a_spare_file_is_exactly_its_bytes(
    tmp_path: Path, spare: bytes
) -> None:
    """A spare (a retired version's file) may be longer or shorter than the page: the file
    ends up holding the page's bytes, no more."""
    (tmp_path / "new" / "canary").mkdir(parents=True)
    (tmp_path / "spare").mkdir()
    (tmp_path / "spare" / "7.1").write_bytes(spare)
    target, spares = Folders(tmp_path / "new"), Folders(tmp_path / "spare")
    try:
        write_file(target, "canary/page.html", b"<p>page</p>", spares, "7.1")
    finally:
        target.close()
        spares.close()
    assert (tmp_path / "new" / "canary" / "page.html").read_bytes() == b"<p>page</p>"
    assert not (tmp_path / "spare" / "7.1").exists()


def _write_into(tmp_path: Path, spare: bytes | None, data: bytes) -> bytes:
    (tmp_path / "new").mkdir()
    (tmp_path / "spare").mkdir()
    if spare is not None:
        (tmp_path / "spare" / "7.1.0").write_bytes(spare)
    target, spares = Folders(tmp_path / "new"), Folders(tmp_path / "spare")
    try:
        write_file(target, "page.html", data, spares, "7.1.0" if spare else None, pad=True)
    finally:
        target.close()
        spares.close()
    return (tmp_path / "new" / "page.html").read_bytes()


@pytest.mark.parametrize(
    ("spare", "length"),
    [
        (None, BLOCK * 3),  # a new file: whole blocks
        (b"x" * 100, BLOCK * 3),  # a shorter spare grows to whole blocks
        (b"x" * (BLOCK * 4 + 10), BLOCK * 5),  # a spare a little longer is kept whole
        (b"x" * (BLOCK * 10), BLOCK * 3),  # one much longer is cut
    ],
)
def test_an_html_page_is_padded_with_spaces_to_whole_blocks(
    tmp_path: Path, spare: bytes | None, length: int
) -> None:
    """Written in whole blocks (no read of a spare's old bytes, no cut when it is a little
    longer), and what a browser reads is the page: spaces and a newline follow it."""
    page = b"<!doctype html><p>page</p>\n" * 400  # 10,800 bytes
    written = _write_into(tmp_path, spare, page)
    assert len(written) == length
    assert written.startswith(page) and written.endswith(b"\n")
    assert not written[len(page) :].strip()


def test_a_publisher_matches_each_page_to_a_spare_by_the_length_it_drew(
    fleet: tuple[Path, Connection],
) -> None:
    """A kept publisher remembers the length of each page it drew (before padding): its next
    version of the page gets a spare of about that length without a stat of the current
    file, and the pages are the bytes a fresh build writes."""
    state, connection = fleet
    site = state.parent / "site"
    builder = SiteBuilder(site, stage_ahead=True)
    build_minutes(builder, connection, 3)
    lengths = builder.publisher.lengths
    pages = json.loads((site / MANIFEST).read_text())["pages"]
    assert set(lengths) <= set(pages) and "canary/web.shop.html" in lengths
    for path, length in lengths.items():
        data = (site / path).read_bytes()
        if path.endswith(".html"):  # padded with spaces and a newline up to whole blocks
            assert length - len(data.rstrip()) in (0, 1), path  # its own last newline
        else:
            assert length == len(data), path
    fresh = state.parent / "fresh"
    build_site(connection, fresh, NOW + timedelta(minutes=2, seconds=30))
    for path in ("canary/web.shop.html", "canary/web.shop-7d.html", "index.html"):
        assert (site / path).read_bytes().rstrip() == (fresh / path).read_bytes().rstrip(), path


def test_spares_go_to_the_pages_of_about_their_length() -> None:
    spares = ["1.1.40960", "1.2.300000", "1.3.16384", "1.4.36864", "0.9"]
    chosen = match_spares(spares, [36000, 15000, 250000, 38000, 900000, 100])
    # 36,000 bytes take 9 blocks: the longest spare within 2 blocks more is 40,960; a page
    # of 250,000 grows the longest one not past that rather than cutting 300,000
    assert chosen[:3] == ["1.1.40960", "1.3.16384", "1.4.36864"]
    assert chosen[3:5] == ["0.9", "1.2.300000"]  # what is left, a cut when nothing fits
    assert chosen[5] is None  # none left: a new file


def test_spares_of_one_length_go_last_name_first_and_the_shortest_when_none_fits() -> None:
    spares = ["1.1.8192", "1.2.8192", "2.1.8192", "1.3.65536", "1.4.65536"]
    chosen = match_spares(spares, [5000, 5000, 100, 100, 100, 100])
    assert chosen[:2] == ["2.1.8192", "1.2.8192"]  # the longest within 2 blocks, last name first
    assert chosen[2] == "1.1.8192"
    # Nothing within 2 blocks of a 100-byte page is left: the shortest, first name first.
    assert chosen[3:] == ["1.3.65536", "1.4.65536", None]
