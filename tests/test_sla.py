"""SLA reports: calendar months against each canary's objective, exact, archived or not, and
drawn again only when a day closes."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from markupsafe import escape

from reconciler.sitebuild import SiteBuilder
from reconciler.sitebuild.sla import refresh_months
from reconciler.sitebuild.sla_pages import NOTHING_COUNTED
from reconciler.sitebuild.tables import Tables, ensure_tables
from reconciler.store.db import Connection, open_state
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc, run_cli

# Mid-month, so the current month has days before today and the previous ones are whole.
NOW = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
FIRST = datetime(2026, 8, 1, tzinfo=UTC)

# web/shop every 20 minutes in eu and us from August 1st to NOW: in eu 1 run in 10 fails in
# September and every run passes otherwise; us passes always. Latencies vary by minute.
GENERATE = """
INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
)
SELECT r || '-1', r, 'web/shop@' || r || '-1', 'web/shop', 'check', 'http', started,
       10 + (m % 97), status, 200, NULL, NULL, started + INTERVAL 2 SECOND
FROM (SELECT r, m, started,
             CASE WHEN r = 'eu' AND month(started) = 9 AND m % 10 = 0 THEN 'fail'
                  ELSE 'pass' END AS status
      FROM (SELECT r, m, $first + INTERVAL (m * 20) MINUTE AS started
            FROM unnest(['eu', 'us']) t(r), range(0, $runs) s(m)))
WHERE started < $now
"""


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Path, Connection]]:
    repo = ConfigRepo(tmp_path / "config")
    repo.write("regions.yaml", region_doc("eu") + "---\n" + region_doc("us"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu") + "---\n" + agent_doc("us-1", "us"))
    shop = canary_doc("shop", namespace="web").replace("@every 30s", "@every 20m")
    repo.write("shop.yaml", shop.replace("spec:\n", "spec:\n  slo: 99.5\n"))
    repo.write("api.yaml", canary_doc("api", namespace="web"))  # no objective, no runs
    repo.commit("fleet")
    state = tmp_path / "state.duckdb"
    applied = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve", "-q")
    assert applied.code == 0, applied.err
    connection = open_state(state)
    assert connection is not None
    connection.execute(GENERATE, {"first": FIRST, "now": NOW, "runs": 120 * 72})
    yield state, connection
    connection.close()


def exact(connection: Connection, month: int, region: str | None) -> tuple[int, int, float]:
    """Runs, passes and p95 of web/shop in a month of 2026, through the start of NOW's day."""
    row = connection.execute(
        """SELECT count(*), count(*) FILTER (WHERE status = 'pass'),
                  quantile_cont(duration_ms, 0.95)
           FROM results WHERE month(started_at) = $m AND started_at < $today
             AND ($r::VARCHAR IS NULL OR region = $r)""",
        {"m": month, "today": NOW.replace(hour=0, minute=0), "r": region},
    ).fetchone()
    assert row
    return int(row[0]), int(row[1]), float(row[2])


def cells(html: str, label: str) -> list[str]:
    """A row's cells after its heading, the heading's note first (`(to …)` or empty)."""
    row = re.search(
        rf"<th scope=\"row\">{re.escape(label)}(?: <span class=\"note\">\(([^)]*)\)</span>)?"
        r"</th>(.*?)</tr>",
        html,
        re.S,
    )
    assert row, label
    tds = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row[2])]
    return [row[1] or "", *tds]


def test_months_are_exact_and_weighed_against_the_objective(
    shop: tuple[Path, Connection],
) -> None:
    state, connection = shop
    site = state.parent / "site"
    SiteBuilder(site).build(connection, NOW)
    page = (site / "sla" / "web.shop.html").read_text()
    assert "Objective: <strong>99.5%</strong>" in page

    runs, passes, p95 = exact(connection, 9, None)
    september = cells(page, "September 2026")
    assert september[0] == ""  # a closed month counts to its end
    assert september[1] == f"{runs:,}" and passes < runs
    failures, allowed = runs - passes, runs * 0.005
    assert september[2] == f"{passes / runs * 100:.2f}% missed" == "95.00% missed"
    assert september[3] == f"{100 * failures / allowed:,.1f}%"
    assert september[6] == f"{p95:,.1f} ms"
    eu_runs, eu_passes, _ = exact(connection, 9, "eu")
    assert september[-2] == f"{int(eu_passes / eu_runs * 10000) / 100:.2f}%"
    assert september[-1] == "100%"

    november = cells(page, "November 2026")
    assert november[0] == "to 2026-11-18 00:00 UTC"  # to date, through the start of today
    assert november[1] == f"{exact(connection, 11, None)[0]:,}" and "met" in november[2]
    assert november[3] == "0.0%"

    q3 = cells(page, "2026-Q3")  # August and September: the data starts on August 1st
    quarter = [exact(connection, m, None) for m in (8, 9)]
    runs, passes = sum(q[0] for q in quarter), sum(q[1] for q in quarter)
    assert q3[1:3] == [f"{runs:,}", f"{int(passes / runs * 10000) / 100:.2f}% missed"]

    index = (site / "sla.html").read_text()
    assert 'href="sla/web.shop.html">web/shop</a>' in index and "99.5%" in index
    # Drawn again only when its months change: no build stamp that would lag the others'.
    assert "<p>Built <time" in index and "<p>Built <time" not in page
    assert "Uptime November 2026" in index and "Uptime October 2026" in index
    api = (site / "sla" / "web.api.html").read_text()
    assert "Objective: <strong>none set</strong>. Add <code>slo: 99.9</code>" in api
    assert escape(NOTHING_COUNTED) in api


def test_the_csv_holds_every_month_and_region(shop: tuple[Path, Connection]) -> None:
    state, connection = shop
    site = state.parent / "site"
    SiteBuilder(site).build(connection, NOW)
    rows = list(csv.DictReader(io.StringIO((site / "sla" / "web.shop.csv").read_text())))
    assert [(r["month"], r["region"]) for r in rows[:3]] == [
        ("2026-08-01", ""), ("2026-08-01", "eu"), ("2026-08-01", "us"),
    ]  # fmt: skip
    assert len(rows) == 4 * 3
    september = next(r for r in rows if r["month"] == "2026-09-01" and r["region"] == "")
    runs, passes, p95 = exact(connection, 9, None)
    assert (int(september["runs"]), int(september["passes"])) == (runs, passes)
    assert september["slo_percent"] == "99.5" and float(september["p95_ms"]) == round(p95, 1)
    assert float(september["budget_spent_percent"]) == pytest.approx(
        100 * (runs - passes) / (runs * 0.005), abs=0.01
    )


def test_pages_move_once_a_day_and_archived_months_read_the_same(
    shop: tuple[Path, Connection], tmp_path: Path
) -> None:
    state, connection = shop
    site = state.parent / "site"
    SiteBuilder(site).build(connection, NOW)
    page = site / "sla" / "web.shop.html"
    before = (page.read_text(), page.stat().st_ino)
    connection.execute(
        """INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
) VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check',
           'http', $at, 12.0, 'fail', 503, 'down', NULL, $at)""",
        {"at": NOW + timedelta(minutes=2)},
    )
    SiteBuilder(site).build(connection, NOW + timedelta(minutes=3))
    # Today is not counted yet: the same page, not even written again.
    assert (page.read_text(), page.stat().st_ino) == before
    SiteBuilder(site).build(connection, NOW + timedelta(days=1))
    assert page.read_text() != before[0] and "to 2026-11-19 00:00 UTC" in page.read_text()

    # Months read from Parquet are the same months.
    connection.close()
    archived = run_cli("results", "archive", "--state", state, "--archive-after", "35d", "-q")
    assert archived.code == 0, archived.err
    reopened = open_state(state)
    assert reopened is not None
    with reopened:
        assert reopened.execute("SELECT min(started_at) FROM results").fetchone()[0] > FIRST
        reopened.execute("DELETE FROM site_months")
        SiteBuilder(tmp_path / "again").build(reopened, NOW + timedelta(days=1))
    again = (tmp_path / "again" / "sla" / "web.shop.html").read_text()
    shown = (site / "sla" / "web.shop.html").read_text()
    strip = re.compile(r"Built <time.*?</p>", re.S)
    assert strip.sub("", again) == strip.sub("", shown)
    assert date(2026, 8, 1).strftime("%B %Y") in again


def test_a_month_is_counted_again_only_for_late_rows(shop: tuple[Path, Connection]) -> None:
    """Today's runs are in no month yet: they cost no recount. A run arriving late for
    September recounts September, and only it."""
    state, connection = shop
    SiteBuilder(state.parent / "site").build(connection, NOW)
    tables = Tables()
    now = int(NOW.timestamp())
    assert refresh_months(connection, tables, now) == []
    row = """INSERT INTO results (
    agent, region, canary, parent, check_name, check_type, started_at, duration_ms, status,
    code, message, phases, received_at
) VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check',
             'http', $at, 12.0, 'fail', 503, 'down', NULL, $received)"""
    connection.execute(row, {"at": NOW + timedelta(minutes=1), "received": NOW})
    assert refresh_months(connection, tables, now) == []
    late = datetime(2026, 9, 3, tzinfo=UTC)
    connection.execute(row, {"at": late, "received": NOW + timedelta(minutes=2)})
    assert refresh_months(connection, tables, now) == [date(2026, 9, 1)]
    runs = connection.execute(
        "SELECT runs FROM site_months WHERE month = '2026-09-01' AND region IS NULL"
    ).fetchone()
    assert runs == (exact(connection, 9, None)[0],)


def test_a_server_counts_the_months_between_builds_newest_first_and_its_pages_say_so(
    shop: tuple[Path, Connection],
) -> None:
    state, connection = shop
    site = state.parent / "site"
    builder = SiteBuilder(site, stage_ahead=True)
    builder.build(connection, NOW)  # the build counts no month: they are counted after it

    def counted() -> list[date]:
        rows = connection.execute("SELECT DISTINCT month FROM site_months ORDER BY month")
        return [row[0] for row in rows.fetchall()]

    def between_builds() -> str:
        """What the server does after each build; returns the SLA page as it stands then."""
        builder.stage_ahead(connection, NOW)
        builder.draw_ahead()
        builder.tidy()
        return (site / "sla" / "web.shop.html").read_text()

    assert counted() == []
    page = (site / "sla" / "web.shop.html").read_text()
    assert "Some months are not counted yet" in page and "No month counted yet." in page
    assert escape(NOTHING_COUNTED) not in page  # the runs are there, only not counted yet
    assert "Some months are not counted yet" in (site / "sla.html").read_text()

    page = between_builds()  # seconds after the first build: this month
    assert counted() == [date(2026, 11, 1)]
    assert cells(page, "November 2026")[1] == f"{exact(connection, 11, None)[0]:,}"
    assert "Some months are not counted yet" in page and "October 2026" not in page
    between_builds()
    between_builds()
    assert counted() == [date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)]
    page = between_builds()  # August: the data starts there, nothing is left to count
    assert counted() == [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)]
    assert "Some months are not counted yet" not in page
    assert cells(page, "August 2026")[1] == f"{exact(connection, 8, None)[0]:,}"
    builder.build(connection, NOW + timedelta(minutes=5))
    assert "Some months are not counted yet" not in (site / "sla.html").read_text()
    tables, now = Tables(), int(NOW.timestamp())
    assert refresh_months(connection, tables, now, most=1) == []


def test_a_month_with_nothing_to_count_yet_does_not_hold_back_the_older_ones(
    shop: tuple[Path, Connection],
) -> None:
    """On the first day of a month, or the first day of a fleet, the current month has no
    run before today: counting it finds nothing. It is counted all the same, so that a
    server counting a month a call goes on to the months before it."""
    _, connection = shop
    today = NOW.replace(hour=0, minute=0)
    connection.execute(
        "DELETE FROM results WHERE started_at >= '2026-11-01' AND started_at < $today",
        {"today": today},
    )
    tables, now = Tables(), int(NOW.timestamp())
    ensure_tables(connection, tables)
    counted = [refresh_months(connection, tables, now, most=1) for _ in range(5)]
    assert counted == [
        [date(2026, 11, 1)], [date(2026, 10, 1)], [date(2026, 9, 1)], [date(2026, 8, 1)], [],
    ]  # fmt: skip
    # A run of November that arrives late is counted then, as in any month.
    connection.execute(
        """INSERT INTO results (agent, region, canary, parent, check_name, check_type,
                                started_at, duration_ms, status, received_at)
           VALUES ('eu-1', 'eu', 'web/shop@eu-1', 'web/shop', 'check', 'http', $at, 12.0,
                   'pass', $received)""",
        {"at": datetime(2026, 11, 2, tzinfo=UTC), "received": NOW + timedelta(hours=1)},
    )
    assert refresh_months(connection, tables, now, most=1) == [date(2026, 11, 1)]
    runs = connection.execute(
        "SELECT runs FROM site_months WHERE month = '2026-11-01' AND region IS NULL"
    ).fetchone()
    assert runs == (1,)


def test_a_fleet_new_today_has_no_month_to_count_and_its_pages_stop_saying_so_at_once(
    shop: tuple[Path, Connection],
) -> None:
    """Today's runs are in no month yet. A server's first build says the months are being
    counted; the count right after it finds none to count, and the SLA pages drawn then
    say there are no results yet, without waiting for the next build."""
    state, connection = shop
    connection.execute("DELETE FROM results WHERE started_at < $today", {"today": NOW.date()})
    site = state.parent / "site"
    builder = SiteBuilder(site, stage_ahead=True)
    builder.build(connection, NOW)
    assert "Some months are not counted yet" in (site / "sla" / "web.shop.html").read_text()
    builder.stage_ahead(connection, NOW)
    assert builder.draw_ahead() > 0
    page = (site / "sla" / "web.shop.html").read_text()
    assert "Some months are not counted yet" not in page
    # The page says why today's runs, on every other page, are not here yet.
    assert "Nothing counted yet: a month counts the runs up to the start of the current day" in page
    # So does the index, at the next build (it said the months were being counted).
    index = (site / "sla.html").read_text()
    assert "Some months are not counted yet" in index and "Nothing counted yet" not in index
    builder.build(connection, NOW + timedelta(minutes=1))
    index = (site / "sla.html").read_text()
    assert "Nothing counted yet: a month counts the runs up to the start" in index
