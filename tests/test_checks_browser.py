"""Browser checks: headless Chromium against a page served on 127.0.0.1 by the test; timings,
console errors, a screenshot when it fails, the agent's flag and a missing browser."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.checks import CheckOutcome, ClientPool, run_check
from agent.checks.browser_check import (
    NOT_ALLOWED,
    BrowserPolicy,
    BrowserSession,
    allow_browser_checks,
)
from agent.checks.outcome import result_row
from agent.checks.series import CheckSeries
from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config
from tests import httpd

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="Chromium is not installed (make test installs Debian's chromium package)",
)
PAGES = {
    "/": b"<html><head><title>Shop</title></head><body><h1>Welcome</h1></body></html>",
    "/noisy": b"<html><body><p>hi</p><script>console.error('cart failed')</script></body></html>",
    "/slow": None,
    "/favicon.ico": b"",
}


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = PAGES.get(self.path, b"")
        if self.path == "/slow":
            threading.Event().wait(30)  # never answers within the check's timeout
            return
        self.send_response(200 if self.path in PAGES else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with httpd.serving(_Pages) as server:
        yield httpd.url(server)


def _run(check: dict[str, Any], policy: BrowserPolicy) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            allow_browser_checks(pool, policy)
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def _check(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "browser", "name": "shop", "url": url, "timeout_ms": 15_000, **fields}


ALLOWED = BrowserPolicy(allowed=True, executable=Path(CHROMIUM))


def test_a_script_that_is_not_python_is_refused_at_load_with_its_line() -> None:
    text = (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: b\nspec:\n"
        "  browser:\n    - name: shop\n      url: ftp://shop\n      script: |\n"
        "        await page.goto('/')\n        if page.url ==\n"
    )
    result = load_config([SourceFile("c.yaml", "sha-b", text.encode)])
    errors = sorted(d.format() for d in result.diagnostics if d.severity == "error")
    assert len(errors) == 2, errors
    assert errors[0].startswith("c.yaml:8:") and "spec.browser[0].url" in errors[0]
    assert "'ftp://shop' is not an http:// or https:// URL" in errors[0]
    assert errors[1].startswith("c.yaml:9:") and "spec.browser[0].script" in errors[1]
    assert "line 2: invalid syntax" in errors[1]


def test_agent_without_the_flag_reports_an_error_and_starts_no_browser() -> None:
    outcome = _run(_check("http://127.0.0.1:9/"), BrowserPolicy(allowed=False))
    assert outcome.status == "error"
    assert outcome.message == NOT_ALLOWED
    assert "--allow-browser-checks" in NOT_ALLOWED


def test_missing_browser_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    outcome = _run(_check("http://127.0.0.1:9/"), BrowserPolicy(True, missing))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert f"no browser at {missing}" in outcome.message
    assert "apt-get install chromium" in outcome.message


@pytest.mark.slow
@needs_chromium
def test_passing_script_reports_navigation_timings(site: str) -> None:
    script = (
        "await expect(page.locator('h1')).to_have_text('Welcome')\n"
        "assert await page.title() == 'Shop'\n"
    )
    outcome = _run(_check(f"{site}/", script=script), ALLOWED)
    assert outcome.status == "pass", outcome.message
    assert outcome.code == 200
    assert outcome.screenshot is None
    row = result_row("shop@local", "shop", outcome)
    assert row.phases is not None
    for phase in ("dns_ms", "connect_ms", "first_byte_ms", "dom_content_loaded_ms", "load_ms"):
        assert getattr(row.phases, phase) is not None, phase
    assert row.phases.load_ms >= row.phases.dom_content_loaded_ms >= row.phases.first_byte_ms  # type: ignore[operator]
    assert row.phases.console_errors == 0
    series = CheckSeries()
    series.record("shop@local", "shop", "browser", outcome)
    text = series.render()
    assert 'probe_success{canary="shop@local",check="shop"} 1' in text
    assert 'probe_browser_timing_seconds{canary="shop@local",check="shop",phase="load"}' in text
    assert 'probe_browser_console_errors{canary="shop@local",check="shop"} 0' in text


@pytest.mark.slow
@needs_chromium
def test_failing_script_names_its_line_and_carries_a_screenshot(site: str) -> None:
    script = "await page.click('h1')\nassert await page.title() == 'Checkout', 'wrong page'\n"
    outcome = _run(_check(f"{site}/", script=script), ALLOWED)
    assert outcome.status == "fail"
    assert outcome.message == "script line 2: AssertionError: wrong page"
    assert outcome.screenshot is not None
    assert outcome.screenshot.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
@needs_chromium
def test_console_errors_are_counted_and_can_fail_the_check(site: str) -> None:
    counted = _run(_check(f"{site}/noisy"), ALLOWED)
    assert counted.status == "pass"
    assert counted.phases is not None and counted.phases["console_errors"] == 1
    assert counted.message == "1 console error(s), first: cart failed"
    failed = _run(_check(f"{site}/noisy", failOnConsoleError=True), ALLOWED)
    assert failed.status == "fail"
    assert failed.message is not None and failed.message.startswith(
        "the page logged console errors; 1 console error(s), first: cart failed"
    )


@pytest.mark.slow
@needs_chromium
def test_a_page_that_never_loads_times_out_within_the_limit(site: str) -> None:
    outcome = _run(_check(f"{site}/slow", timeout_ms=3_000), ALLOWED)
    assert outcome.status == "error"
    assert outcome.message == "timed out after 3000ms"
    assert outcome.duration_ms < 3_000 + 10_000


@pytest.mark.slow
@needs_chromium
def test_a_timed_out_run_closes_its_pages_and_the_next_run_is_not_slowed(site: str) -> None:
    from agent.checks.browser_check import BROWSER_KEY

    async def main() -> tuple[CheckOutcome, int, CheckOutcome]:
        async with ClientPool(size=1, trust_env=False) as pool:
            allow_browser_checks(pool, ALLOWED)
            hung = await run_check(_check(f"{site}/slow", timeout_ms=2_000), pool, lambda: NOW)
            browser = await pool.kept(BROWSER_KEY).browser()
            left = len(browser.contexts)
            # A short timeout still fits: the browser is running, not started again.
            after = await run_check(_check(f"{site}/", timeout_ms=2_000), pool, lambda: NOW)
            return hung, left, after

    hung, left, after = asyncio.run(main())
    assert hung.message == "timed out after 2000ms"
    assert left == 0
    assert after.status == "pass", after.message


def test_screenshots_beyond_the_queue_are_dropped_and_counted() -> None:
    from agent.metrics import Metrics
    from agent.screenshots import MAX_PENDING, PendingShot, ScreenshotQueue

    metrics = Metrics("agent")
    queue = ScreenshotQueue(metrics)
    for second in range(MAX_PENDING + 3):
        queue.offer(PendingShot("shop@eu-1", "cart", NOW.replace(second=second), b"\x89PNG"))
    assert len(queue) == MAX_PENDING
    rendered = metrics.render()
    assert 'agent_screenshots_dropped_total{reason="queue_full"} 3' in rendered
    queue.drop_all("stopped")
    assert f'agent_screenshots_dropped_total{{reason="stopped"}} {MAX_PENDING}' in metrics.render()


def test_only_the_flag_allows_browser_checks_and_the_path_comes_from_flag_or_environment() -> None:
    from agent.cli import build_parser
    from agent.settings import load_settings

    environ = {"AGENT_TOKEN": "t", "AGENT_ALLOW_BROWSER_CHECKS": "1"}
    flags = {"url": "http://127.0.0.1:1"}
    assert load_settings(flags, environ).allow_browser_checks is False
    args = build_parser().parse_args(["run", "--allow-browser-checks", "--browser-path", "/x"])
    assert (args.allow_browser_checks, args.browser_path) == (True, Path("/x"))
    allowed = load_settings({**flags, "allow_browser_checks": True}, environ)
    assert allowed.allow_browser_checks is True
    moved = load_settings(flags, {**environ, "AGENT_BROWSER_PATH": "/opt/chromium"})
    assert moved.browser_path == Path("/opt/chromium")


def _descendants() -> set[int]:
    """Every running process below this one (zombies left out)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            parents[int(stat.parent.name)] = int(parent)
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


T = TypeVar("T")


def _browser_processes(
    session: BrowserSession, read: Callable[[int], T]
) -> tuple[dict[int, T], Path | None]:
    """Start the session's browser and load a page (so a renderer runs too), then `read` each
    process it started; also the launcher script's folder while the browser ran. The browser
    is stopped before this returns."""

    async def main() -> tuple[dict[int, T], Path | None]:
        others = _descendants()  # children of earlier tests, still running
        try:
            browser = await session.browser()
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto("data:text/html,<h1>hi</h1>")
            wrapper = Path(session._wrapper.name) if session._wrapper else None
            found = {}
            for pid in _descendants() - others:
                with contextlib.suppress(OSError):  # gone meanwhile
                    found[pid] = read(pid)
            await context.close()
            return found, wrapper
        finally:
            await session.close()

    return asyncio.run(main())


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize(
    ("priority", "policy"), [("idle", os.SCHED_IDLE), ("normal", os.sched_getscheduler(0))]
)
def test_chromium_and_its_driver_yield_the_cpu_to_other_checks(priority: str, policy: int) -> None:
    session = BrowserSession(Path(CHROMIUM), priority)  # type: ignore[arg-type]
    policies, wrapper = _browser_processes(session, os.sched_getscheduler)
    assert len(policies) >= 4  # the driver, the browser, a renderer and helper processes
    assert set(policies.values()) == {policy}
    assert wrapper is None or not wrapper.exists()  # the launcher script goes with the browser


def _autogroup(pid: int | str) -> tuple[str, int]:
    """A process's scheduling autogroup and its nice value (`/autogroup-12 nice 0`)."""
    name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
    return name, int(nice)


def _autogroups_apply() -> bool:
    """Whether the kernel schedules this process by autogroup: it has the file, and names a
    group in it. The file is there but empty where the session has no autogroup of its own
    (autogroups switched off, as on the project's CI host); then there is nothing to weigh."""
    path = Path("/proc/self/autogroup")
    return path.exists() and bool(path.read_text().strip())


@pytest.mark.slow
@needs_chromium
@pytest.mark.skipif(
    not _autogroups_apply(), reason="autogroup scheduling does not apply to this process"
)
def test_chromium_in_a_session_of_its_own_gets_the_lowest_group_weight() -> None:
    """Playwright starts Chromium in a new session, which autogroup scheduling weighs as
    much as the agent's own group: at idle priority that group must weigh least, or
    SCHED_IDLE inside it does not keep a page load from taking the agent's CPU."""

    ours = _autogroup("self")
    groups, _ = _browser_processes(BrowserSession(Path(CHROMIUM), "idle"), _autogroup)
    assert len(groups) >= 4  # the driver, the browser, a renderer and helper processes
    apart = {group for group in groups.values() if group[0] != ours[0]}
    assert apart, "Chromium shares the agent's session (then SCHED_IDLE is enough)"
    assert all(nice == 19 for _, nice in apart), groups
    assert _autogroup("self") == ours, "the agent's own group is left alone"


def test_browser_priority_comes_from_flag_or_environment() -> None:
    from agent.cli import build_parser
    from agent.settings import SettingsError, load_settings

    environ = {"AGENT_TOKEN": "t"}
    flags = {"url": "http://127.0.0.1:1"}
    assert load_settings(flags, environ).browser_priority == "idle"
    args = build_parser().parse_args(["run", "--browser-priority", "normal"])
    assert args.browser_priority == "normal"
    from_flag = load_settings({**flags, "browser_priority": "normal"}, environ)
    assert from_flag.browser_priority == "normal"
    from_environment = load_settings(flags, {**environ, "AGENT_BROWSER_PRIORITY": "normal"})
    assert from_environment.browser_priority == "normal"
    with pytest.raises(SettingsError, match="browser_priority: expected one of idle, normal"):
        load_settings(flags, {**environ, "AGENT_BROWSER_PRIORITY": "low"})


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("priority", ["idle", "normal"])
def test_chromium_and_its_driver_run_only_on_the_cpus_given(priority: str) -> None:
    session = BrowserSession(Path(CHROMIUM), priority, frozenset({0}))  # type: ignore[arg-type]
    cpus, _ = _browser_processes(session, os.sched_getaffinity)
    assert len(cpus) >= 4  # the driver, the browser, a renderer and helper processes
    assert all(found == {0} for found in cpus.values()), cpus


def test_browser_cpus_come_from_flag_or_environment_as_taskset_writes_them() -> None:
    from agent.cli import build_parser
    from agent.settings import SettingsError, load_settings, parse_cpu_list

    environ = {"AGENT_TOKEN": "t"}
    flags = {"url": "http://127.0.0.1:1"}
    assert load_settings(flags, environ).browser_cpus is None  # any CPU
    args = build_parser().parse_args(["run", "--browser-cpus", "0"])
    assert load_settings({**flags, "browser_cpus": args.browser_cpus}, environ).browser_cpus == {0}
    assert load_settings(flags, {**environ, "AGENT_BROWSER_CPUS": "0"}).browser_cpus == {0}
    assert parse_cpu_list("1-3", 8) == {1, 2, 3}
    assert parse_cpu_list("0, 2,4-5", 8) == {0, 2, 4, 5}
    with pytest.raises(SettingsError, match=r"browser_cpus: expected CPUs like 1-3 or 0,2"):
        parse_cpu_list("all", 8)
    with pytest.raises(SettingsError, match=r"'3-1' is not a range of CPUs"):
        parse_cpu_list("3-1", 8)
    with pytest.raises(SettingsError, match=r"this machine has CPUs 0-1, not 2"):
        parse_cpu_list("1-2", 2)
