"""Retries and the degraded outcome: what a check spec may say, and how the agent runs it
against a real HTTP target on 127.0.0.1 (a target failing twice then passing, one that never
passes, a slow one)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.checks import CheckOutcome, ClientPool, result_row, run_check
from agent.runtime import Agent
from agent.settings import AgentSettings
from reconciler.core.agentconfig import agent_configs
from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.incidents import CheckRow, Run, Target, group_runs
from reconciler.core.load import LoadResult, load_config
from reconciler.core.probe_metrics import render as probe_render
from reconciler.core.status import CanaryState, LastRun, Status, canary_status, document
from reconciler.sitebuild import build_site
from reconciler.sitebuild import formatting as fmt
from reconciler.sitebuild.layout import badge
from reconciler.store.db import open_state
from reconciler.store.probes import latest_runs
from tests import httpd
from tests.conftest import ConfigRepo, region_doc
from tests.inprocess import running_in_process
from tests.rows import RESULT_COLUMNS_V1
from tests.waiting import wait_for

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RELEASE = threading.Event()


class Flaky(BaseHTTPRequestHandler):
    """`/flaky/<key>?every=N`: only every Nth request of a key answers 200, the others 503;
    `/status/<code>`; `/slow?ms=N`: answers no sooner than N ms (`&ms=N` slows the others
    too)."""

    protocol_version = "HTTP/1.1"
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        code = 200
        if url.path.startswith("/flaky/"):
            with self.lock:
                self.seen[url.path] += 1
                count = self.seen[url.path]
            code = 200 if count % int(query.get("every", ["3"])[0]) == 0 else 503
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
        if "ms" in query:
            RELEASE.wait(int(query["ms"][0]) / 1000)
        body = b"ok" if code == 200 else b"no"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with httpd.serving(Flaky) as server:
        yield httpd.url(server)
        RELEASE.set()  # handlers still waiting on it end before the server stops


def run(check: Mapping[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=2, trust_env=False) as pool:
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def http(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "timeout_ms": 2000, "url": url, **fields}


# --- the agent ------------------------------------------------------------------------------


def test_a_target_failing_twice_then_passing_passes_after_two_retries(target: str) -> None:
    outcome = run(http(f"{target}/flaky/a?every=3", retries={"count": 3, "interval_ms": 5}))
    assert (outcome.status, outcome.retries, outcome.code) == ("pass", 2, 200)
    row = result_row("web/shop@eu-1", "web", outcome)
    assert (row.status, row.retries) == ("pass", 2)
    # The run starts when its first attempt started: it stays grouped with its tick.
    assert row.started_at == NOW


def test_a_target_that_never_passes_fails_after_every_retry(target: str) -> None:
    outcome = run(http(f"{target}/status/500", retries={"count": 2, "interval_ms": 5}))
    assert (outcome.status, outcome.retries, outcome.code) == ("fail", 2, 500)
    assert outcome.message is not None and "500" in outcome.message


def test_a_pass_at_the_first_attempt_makes_no_retry(target: str) -> None:
    outcome = run(http(f"{target}/status/200", retries={"count": 2, "interval_ms": 5}))
    assert (outcome.status, outcome.retries) == ("pass", 0)


def test_without_retries_a_failure_is_kept_at_once(target: str) -> None:
    outcome = run(http(f"{target}/flaky/b?every=2"))
    assert (outcome.status, outcome.retries) == ("fail", 0)


def test_a_pass_slower_than_the_degraded_threshold_is_degraded(target: str) -> None:
    outcome = run(http(f"{target}/slow?ms=150", degradedThresholdMillis=50))
    assert outcome.status == "degraded"
    assert outcome.message is not None and "over degradedThresholdMillis 50" in outcome.message
    assert outcome.duration_ms >= 150
    assert result_row("web/shop@eu-1", "web", outcome).status == "degraded"


def test_a_fast_pass_is_not_degraded_and_a_slow_failure_stays_a_failure(target: str) -> None:
    assert run(http(f"{target}/status/200", degradedThresholdMillis=1000)).status == "pass"
    slow_failure = run(http(f"{target}/status/503", degradedThresholdMillis=1))
    assert slow_failure.status == "fail"


def test_a_degraded_run_after_retries_keeps_both(target: str) -> None:
    # Every answer takes 20 ms: the pass after the retry is over the threshold however fast
    # the loopback is (at 1 ms without the wait, a fast pass was sometimes not degraded).
    check = http(
        f"{target}/flaky/c?every=2&ms=20",
        retries={"count": 1, "interval_ms": 5},
        degradedThresholdMillis=10,
    )
    outcome = run(check)
    assert (outcome.status, outcome.retries) == ("degraded", 1)


@pytest.mark.parametrize(
    "retries",
    [{"count": 11}, {"count": "2"}, {"count": 1, "interval_ms": -1}, {"timeout_ms": 5}, 3],
)
def test_malformed_retries_are_an_error_not_a_crash(target: str, retries: object) -> None:
    outcome = run(http(f"{target}/status/200", retries=retries))
    assert outcome.status == "error"
    assert outcome.message is not None and outcome.message.startswith("ValueError: retries")


# --- the spec -------------------------------------------------------------------------------


def load(text: str) -> LoadResult:
    return load_config([SourceFile("canary.yaml", "sha", lambda: text.encode())])


def errors(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity == "error"]


def canary(check: str, schedule: str = "@every 30s") -> str:
    return (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: shop\n"
        f"spec:\n  schedule: '{schedule}'\n  agentSelector: [local]\n  http:\n"
        "    - name: home\n      url: http://127.0.0.1:9/\n" + check
    )


def test_retries_that_cannot_fit_the_period_are_an_error_naming_the_line() -> None:
    text = canary("      retries:\n        maxRetries: 2\n")
    assert errors(load(text)) == [
        "canary.yaml:11:7: Canary/default/shop: spec.http[0].retries: 2 retries 1s apart with "
        "timeout 10s take up to 32s, not less than the schedule period (30s): lower "
        "retries.maxRetries, retries.interval or timeout, or run less often"
    ]


def test_retries_with_an_explicit_timeout_count_it_for_every_attempt() -> None:
    fits = canary("      timeout: 5s\n      retries: {maxRetries: 4, interval: 1s}\n")
    assert errors(load(fits)) == []  # 5 × 5s + 4 × 1s = 29s < 30s
    too_long = canary(
        "      timeout: 5s\n      retries: {maxRetries: 4, interval: 1s, delay: 2s}\n"
    )
    assert [e.split(": ", 3)[2:] for e in errors(load(too_long))] == [
        [
            "spec.http[0].retries",
            "4 retries 1s apart after a delay of 2s with timeout 5s take up to 31s, not less "
            "than the schedule period (30s): lower retries.maxRetries, retries.interval or "
            "timeout, or run less often",
        ]
    ]
    # A retries timeout bounds the run: no attempt starts after it.
    bounded = canary("      timeout: 5s\n      retries: {maxRetries: 10, timeout: 20s}\n")
    assert errors(load(bounded)) == []  # 20s + one more attempt of 5s = 25s < 30s


def test_the_canarys_retries_are_every_checks_and_a_too_long_one_names_the_check() -> None:
    text = canary("", schedule="@every 30s").replace(
        "  agentSelector: [local]\n", "  agentSelector: [local]\n  retries: {maxRetries: 3}\n"
    )
    assert [e.split(": ", 3)[2:] for e in errors(load(text))] == [
        [
            "spec.retries",
            "check 'home': 3 retries 1s apart with timeout 10s take up to 43s, not less than "
            "the schedule period (30s): lower retries.maxRetries, retries.interval or timeout, "
            "or run less often",
        ]
    ]


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        ("      retries: {maxRetries: 11}\n", "retries.maxRetries", "less than or equal to 10"),
        ("      retries: {maxRetries: -1}\n", "retries.maxRetries", "greater than or equal to 0"),
        ("      retries: {maxRetries: 1, interval: soon}\n", "retries.interval", "duration"),
        ("      retries: {maxRetries: 1, backoff: linear}\n", "retries.backoff", "unknown field"),
        (
            "      retries: {timeout: 5s, interval: 0s}\n",
            "retries.interval",
            "must be greater than zero when timeout is set",
        ),
        ("      degradedThresholdMillis: 0\n", "degradedThresholdMillis", "greater than or"),
        (
            "      degradedThresholdMillis: 800\n      thresholdMillis: 500\n",
            "degradedThresholdMillis",
            "800 must be lower than thresholdMillis (500)",
        ),
    ],
)
def test_bad_retries_and_thresholds_name_the_field(check: str, field: str, message: str) -> None:
    found = errors(load(canary(check)))
    assert len(found) == 1, found
    assert f"spec.http[0].{field}: " in found[0] and message in found[0], found


def served_checks(text: str) -> dict[str, dict[str, Any]]:
    result = load(text)
    assert result.ok, errors(result)
    compiled = compile_config(result.config)
    served = agent_configs(compiled.resources.values(), {})["local"]
    return {c["name"]: c for c in orjson.loads(served.body)["canaries"][0]["checks"]}


def test_agents_get_retries_in_milliseconds_and_the_degraded_threshold() -> None:
    checks = served_checks(
        canary(
            "      timeout: 2s\n      retries: {maxRetries: 2, interval: 250ms}\n"
            "      degradedThresholdMillis: 300\n"
            "    - name: plain\n      url: http://127.0.0.1:9/plain\n"
            "      retries: {maxRetries: 0}\n"
            "    - name: bounded\n      url: http://127.0.0.1:9/bounded\n      timeout: 1s\n"
            "      retries: {timeout: 10s, delay: 500ms}\n"
        )
    )
    assert checks["home"]["retries"] == {
        "count": 2,
        "interval_ms": 250,
        "delay_ms": 0,
        "timeout_ms": 0,
    }
    assert checks["home"]["degradedThresholdMillis"] == 300
    assert "retries" not in checks["plain"]  # maxRetries 0: no retries to make
    # A timeout alone retries (canary-checker's rule), at most as often as a row can say.
    assert checks["bounded"]["retries"] == {
        "count": 10,
        "interval_ms": 1000,
        "delay_ms": 500,
        "timeout_ms": 10000,
    }


def test_a_checks_retries_fields_win_over_the_canarys_field_by_field() -> None:
    text = canary(
        "      timeout: 1s\n      retries: {interval: 2s}\n"
        "    - name: none\n      url: http://127.0.0.1:9/none\n      retries: {disabled: true}\n"
        "    - name: inherits\n      url: http://127.0.0.1:9/inherits\n      timeout: 1s\n"
    ).replace(
        "  agentSelector: [local]\n", "  agentSelector: [local]\n  retries: {maxRetries: 3}\n"
    )
    checks = served_checks(text)
    assert checks["home"]["retries"]["count"] == 3
    assert checks["home"]["retries"]["interval_ms"] == 2000
    assert checks["inherits"]["retries"]["interval_ms"] == 1000
    assert "retries" not in checks["none"]


def test_canary_checkers_own_retries_document_loads_and_runs_its_retries() -> None:
    text = (
        "apiVersion: canaries.flanksource.com/v1\nkind: Canary\nmetadata:\n  name: c\n"
        "spec:\n  schedule: '@every 1m'\n  agentSelector: [local]\n"
        "  retries: {maxRetries: 2, interval: 5s}\n"
        "  http:\n    - name: web\n      url: https://example.com/\n"
        "      retries: {maxRetries: 1, disabled: false}\n"
    )
    assert served_checks(text)["web"]["retries"] == {
        "count": 1,
        "interval_ms": 5000,
        "delay_ms": 0,
        "timeout_ms": 0,
    }


def test_a_retries_timeout_stops_retrying_once_it_has_passed(target: str) -> None:
    retries = {"count": 10, "interval_ms": 60, "timeout_ms": 100}
    outcome = run(http(f"{target}/status/500", retries=retries))
    # Attempts start at about 0, 60 and 100 ms (the last wait shrinks to what is left).
    assert outcome.status == "fail" and 1 <= outcome.retries <= 3


def test_a_delay_waits_before_the_first_attempt(target: str) -> None:
    outcome = run(http(f"{target}/flaky/d?every=1", retries={"count": 1, "delay_ms": 50}))
    assert (outcome.status, outcome.retries) == ("pass", 0)
    assert outcome.started_at == NOW  # the run's start, before the delay


# --- end to end: the local agent, the store, the read API and the site -----------------------


def _canary(name: str, check: str) -> str:
    return (
        "apiVersion: canary-reconciler/v1\nkind: Canary\n"
        f"metadata:\n  name: {name}\nspec:\n  schedule: '@every 2s'\n  agentSelector: [local]\n"
        "  http:\n" + check + "---\n"
    )


def test_retried_and_degraded_runs_are_stored_counted_and_shown(
    config_repo: ConfigRepo, tmp_path: Path, target: str
) -> None:
    retry = "      timeout: 500ms\n      retries: {maxRetries: 2, interval: 20ms}\n"
    config_repo.write("regions.yaml", region_doc("default"))
    config_repo.write(
        "canaries.yaml",
        # Every third request passes: each run passes at its third attempt.
        _canary("flaky", f"    - name: home\n      url: {target}/flaky/e2e?every=3\n{retry}")
        + _canary("broken", f"    - name: home\n      url: {target}/status/500\n{retry}")
        + _canary(
            "slow",
            f"    - name: home\n      url: {target}/slow?ms=250\n      timeout: 1500ms\n"
            "      degradedThresholdMillis: 100\n",
        ),
    )
    config_repo.commit("retries and a degraded threshold")
    state = tmp_path / "state.duckdb"
    with running_in_process(config_repo.path, state) as server:
        server.wait_ready()

        def results(name: str) -> list[dict[str, Any]]:
            response = server.client.get(f"/api/v1/targets/default.{name}/results")
            rows: list[dict[str, Any]] = response.json()["results"]
            return rows

        # Two runs of each: the newest run is then one the status looks back on.
        wait_for(lambda: all(len(results(n)) >= 2 for n in ("flaky", "broken", "slow")), 30, "runs")
        flaky, broken, slow = results("flaky")[0], results("broken")[0], results("slow")[0]
        assert (flaky["status"], flaky["retries"], flaky["code"]) == ("pass", 2, 200)
        assert (broken["status"], broken["retries"], broken["code"]) == ("fail", 2, 500)
        assert (slow["status"], slow["retries"]) == ("degraded", 0)
        assert "over degradedThresholdMillis 100" in slow["message"]

        uptime = server.client.get("/api/v1/targets/default.slow/uptime").json()
        assert uptime["uptime"] == 1.0  # degraded counts as up
        assert uptime["degraded"] == uptime["passed"] == uptime["total"] >= 2
        uptime = server.client.get("/api/v1/targets/default.flaky/uptime").json()
        assert uptime["retried"] == uptime["passed"] == uptime["total"] >= 2
        assert uptime["degraded"] == 0
        [region] = server.client.get("/api/v1/targets/default.slow/regions").json()["regions"]
        assert region["degraded"] == region["passed"] == region["total"] >= 2

        targets = {t["id"]: t for t in server.client.get("/api/v1/targets").json()["targets"]}
        assert targets["default.flaky"]["last_run"]["status"] == "pass"
        assert targets["default.flaky"]["last_run"]["retries"] == 2
        assert targets["default.slow"]["last_run"]["status"] == "degraded"
        assert targets["default.slow"]["status"] == "degraded_performance"
        assert targets["default.flaky"]["status"] == "operational"
    connection = open_state(state)
    assert connection is not None
    with connection:
        build_site(connection, tmp_path / "site", datetime.now(UTC))
    pages = tmp_path / "site" / "canary"
    flaky_page = (pages / "default.flaky.html").read_text()
    assert '<li class="kpi last-retried"><span class="kpi-label">Last run</span> ' in flaky_page
    assert '<span class="kpi-value">passed after 2 retries</span>' in flaky_page
    assert _card(flaky_page, "Passed after retries (24h)") >= 2
    assert _card(flaky_page, "Degraded (24h)") == 0
    slow_page = (pages / "default.slow.html").read_text()
    assert '<li class="kpi last-degraded"><span class="kpi-label">Last run</span> ' in slow_page
    assert _card(slow_page, "Degraded (24h)") >= 2
    assert '<span class="badge status-degraded_performance">Degraded performance</span>' in (
        slow_page
    )
    broken_page = (pages / "default.broken.html").read_text()
    assert "<td>fail after 2 retries</td>" in broken_page  # the recent failures
    assert '<span class="kpi-value">failed after 2 retries</span>' in broken_page
    status_page = (tmp_path / "site" / "status.html").read_text()
    assert '<span class="last-run last-retried">last run passed after 2 retries</span>' in (
        status_page
    )
    assert '<span class="last-run last-degraded">last run degraded (slow)</span>' in status_page
    css = (tmp_path / "site" / "static" / "site.css").read_text()
    assert ".last-run.last-degraded, .last-run.last-retried { color: var(--degraded); }" in css


def _card(page: str, label: str) -> int:
    """The number on a canary page's first KPI card with this label."""
    match = re.search(
        rf'<span class="kpi-label">{re.escape(label)}</span> <span class="kpi-value">([\d,]+)<',
        page,
    )
    assert match is not None, label
    return int(match.group(1).replace(",", ""))


# --- how runs read ------------------------------------------------------------------------


def test_a_run_is_degraded_when_a_check_is_and_keeps_the_most_retries() -> None:
    rows = [
        CheckRow(NOW, "home", "pass", 2),
        CheckRow(NOW + timedelta(milliseconds=5), "api", "degraded"),
        CheckRow(NOW + timedelta(seconds=30), "home", "pass"),
        CheckRow(NOW + timedelta(seconds=30, milliseconds=5), "api", "degraded", 1),
        CheckRow(NOW + timedelta(seconds=60), "home", "fail", 3),
        CheckRow(NOW + timedelta(seconds=60, milliseconds=5), "api", "degraded"),
    ]
    runs, _ = group_runs(rows, 30.0, 2, NOW + timedelta(minutes=5))
    assert runs == (
        Run(NOW, True, True, 2),
        Run(NOW + timedelta(seconds=30), True, True, 1),
        # A failed run is failed, not degraded; its retries are still told.
        Run(NOW + timedelta(seconds=60), False, False, 3),
    )


@pytest.mark.parametrize(
    ("run", "words", "outcome"),
    [
        ({"status": "pass"}, "passed", "pass"),
        ({"status": "pass", "retries": 1}, "passed after 1 retry", "retried"),
        ({"status": "pass", "retries": 2}, "passed after 2 retries", "retried"),
        ({"status": "degraded"}, "degraded (slow)", "degraded"),
        ({"status": "degraded", "retries": 2}, "degraded (slow), after 2 retries", "degraded"),
        ({"status": "fail"}, "failed", "fail"),
        ({"status": "fail", "retries": 3}, "failed after 3 retries", "fail"),
    ],
)
def test_each_outcome_reads_as_its_own(run: dict[str, Any], words: str, outcome: str) -> None:
    assert fmt.outcome_text(run) == words
    assert fmt.last_run(run) == f"last run {words}"
    assert fmt.run_outcome(run) == outcome
    assert badge("operational", run).endswith(
        f'<span class="last-run last-{outcome}">last run {words}</span>'
    )


def test_the_last_run_document_says_degraded_and_retries() -> None:
    state = CanaryState(Status.OPERATIONAL, {}, LastRun(NOW, True, False, 2), "passing")
    assert document(state)["last_run"] == {
        "at": "2030-01-02T03:04:05Z",
        "status": "pass",
        "retries": 2,
    }
    state = CanaryState(Status.OPERATIONAL, {}, LastRun(NOW, True, True), "passing")
    assert document(state, times=False)["last_run"] == {"status": "degraded"}


def test_a_degraded_run_is_up_in_probe_success_and_flagged_in_probe_degraded(
    tmp_path: Path,
) -> None:
    connection = open_state(tmp_path / "state.duckdb")
    assert connection is not None
    with connection:
        connection.execute(
            f"""INSERT INTO results ({RESULT_COLUMNS_V1}, retries) VALUES
                ('eu-1', 'eu', 'shop/web@eu-1', 'shop/web', 'home', 'http', $at, 912.5,
                 'degraded', 200, 'took 912.5ms, over degradedThresholdMillis 800', NULL,
                 $at, 1)""",
            {"at": NOW},
        )
        [run] = latest_runs(connection, NOW - timedelta(hours=1))
    assert (run.passed, run.degraded) == (True, True)
    families = {
        f.name: f.samples[0].value
        for f in text_string_to_metric_families(probe_render([run], "full"))
    }
    assert (families["probe_success"], families["probe_degraded"]) == (1.0, 1.0)
    basic = {f.name for f in text_string_to_metric_families(probe_render([run], "basic"))}
    assert "probe_degraded" not in basic


def _runs(outcomes: str) -> list[Run]:
    """`outcomes` ("p" pass, "d" degraded, "r" passed after retries, "f" fail), a minute
    apart, the last one now."""
    return [
        Run(NOW - timedelta(minutes=len(outcomes) - 1 - i), o != "f", o == "d", int(o == "r"))
        for i, o in enumerate(outcomes)
    ]


@pytest.mark.parametrize(
    ("eu", "us", "blended", "eu_status"),
    [
        ("ppd", "ppp", Status.DEGRADED_PERFORMANCE, Status.DEGRADED_PERFORMANCE),
        ("pdp", "ppp", Status.DEGRADED_PERFORMANCE, Status.DEGRADED_PERFORMANCE),
        # successThreshold (2) plain passes clear it, as they clear a failure.
        ("dpp", "ppp", Status.OPERATIONAL, Status.OPERATIONAL),
        # A pass after retries is a pass: nothing to clear.
        ("prr", "ppp", Status.OPERATIONAL, Status.OPERATIONAL),
        # A failure is worse than slowness, in the region and blended.
        ("dfp", "ppp", Status.PARTIAL_OUTAGE, Status.PARTIAL_OUTAGE),
        ("ppd", "pfp", Status.PARTIAL_OUTAGE, Status.DEGRADED_PERFORMANCE),
    ],
)
def test_degraded_runs_make_degraded_performance_until_cleared(
    eu: str, us: str, blended: Status, eu_status: Status
) -> None:
    target = Target("web/shop", "majority", 3, 2, 60.0, {"eu": ("eu-1",), "us": ("us-1",)})
    state = canary_status(target, {"eu-1": _runs(eu), "us-1": _runs(us)}, False, NOW)
    assert (state.status, state.regions["eu"].status) == (blended, eu_status)
    if eu_status is Status.DEGRADED_PERFORMANCE:
        assert state.regions["eu"].reason == "slow on eu-1"
        assert state.regions["eu"].verdict == "up"  # never an incident


def test_the_agent_counts_skipped_runs_and_logs_each_check_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = AgentSettings(url="http://127.0.0.1:9", token="cra_eu-1.t", spool=tmp_path / "s")
    agent = Agent(settings)
    caplog.set_level(logging.WARNING, logger="agent")
    check = {"name": "home", "type": "http"}
    for _ in range(3):
        agent._skipped("web/shop@eu-1", check)
    assert 'agent_checks_skipped_total{type="http"} 3' in agent.metrics.render()
    skips = [r for r in caplog.records if "still running when due again" in r.getMessage()]
    assert len(skips) == 1
    agent.spool.close()
