"""Browser checks: headless Chromium loads a page and runs the check's Playwright script."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shlex
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.checks.outcome import Verdict
from agent.checks.pool import ClientPool
from schemas.checks import browser_script_source

# Keys under which the pool keeps the agent's policy and the running browser.
POLICY_KEY = ("browser", "policy")
BROWSER_KEY = ("browser", "session")
NOT_ALLOWED = (
    "browser checks are not allowed on this agent: a browser check runs a script from the "
    "config repository here; start the agent with --allow-browser-checks to run them"
)
# Chromium in a container or as root needs --no-sandbox; the renderer still runs headless and
# the script only reaches it through the DevTools protocol.
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio")
MAX_CONSOLE_ERRORS = 20
# How Chromium and the Playwright driver are scheduled (docs/agent.md, --browser-priority): a
# page load takes a quarter of a second of CPU or more in bursts, and at the agent's priority
# those bursts delay its other checks on a small machine. `idle` runs them under SCHED_IDLE,
# which Chromium keeps for every process it forks (it resets niceness, not the policy).
BrowserPriority = Literal["idle", "normal"]
BROWSER_PRIORITIES: tuple[BrowserPriority, ...] = ("idle", "normal")
DEFAULT_BROWSER_PRIORITY: BrowserPriority = "idle"
# The autogroup nice of Chromium's session at idle priority (`_launcher`): the lowest weight.
AUTOGROUP_NICE = 19
# How long closing or killing the browser may take before we stop waiting for it.
CLOSE_SECONDS = 5.0
# Navigation timing entries of the first page load, as the result's phases (milliseconds).
_NAVIGATION = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  return n ? n.toJSON() : null;
}"""


def default_browser_path() -> Path:
    """Chromium from the system package (Debian's `chromium`), wherever PATH finds it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else Path("/usr/bin/chromium")


@dataclass(frozen=True)
class BrowserPolicy:
    """Whether this agent runs browser checks, and with which browser binary."""

    allowed: bool = False
    executable: Path = Path("/usr/bin/chromium")
    priority: BrowserPriority = DEFAULT_BROWSER_PRIORITY
    cpus: frozenset[int] | None = None  # the CPUs Chromium and its driver may run on


def allow_browser_checks(pool: ClientPool, policy: BrowserPolicy) -> None:
    """Hand the agent's browser policy to the checks that share `pool`.

    Args:
        pool: The agent's client pool (it also keeps the running browser, and closes it).
        policy: Whether browser checks may run and where Chromium is.
    """

    async def forget(_: object) -> None:
        return None

    pool.keep(POLICY_KEY, policy, forget)


class BrowserMissing(RuntimeError):
    """What browser checks need is not installed on this agent."""


class BrowserSession:
    """One Chromium, started on first use and shared by browser checks (a context each)."""

    def __init__(
        self,
        executable: Path,
        priority: BrowserPriority = DEFAULT_BROWSER_PRIORITY,
        cpus: frozenset[int] | None = None,
    ) -> None:
        """Remember the binary, its priority and its CPUs (None: any); nothing starts until
        `browser()` is awaited."""
        self.executable = executable
        self.priority = priority
        self.cpus = cpus
        self._wrapper: tempfile.TemporaryDirectory[str] | None = None
        self._driver: Any = None
        self._browser: Any = None
        self._lock = asyncio.Lock()
        self.runs = 0  # browser check runs in flight on this browser

    async def browser(self) -> Any:
        """The running browser, launched (again) if it is not connected."""
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            await self.close()
            try:
                from playwright.async_api import async_playwright
            except ImportError as error:
                raise BrowserMissing(
                    "browser checks need the Python package playwright on the agent: "
                    "pip install 'canary-reconciler[browser]'"
                ) from error

            before = _children()
            self._driver = await async_playwright().start()
            for pid in _children() - before:  # the driver Playwright just started
                _schedule(pid, self.priority, self.cpus)
            self._browser = await self._driver.chromium.launch(
                executable_path=self._launcher(), args=list(CHROMIUM_FLAGS), headless=True
            )
            return self._browser

    def _launcher(self) -> str:
        """The binary Playwright starts: Chromium itself, or a script starting it at idle
        priority and on its CPUs (so every process it forks, renderers included, inherits
        the priority and the CPUs).

        Idle priority is two things on Linux. Playwright starts Chromium in a session of its
        own, and with the kernel's autogroup scheduling (the default on desktop and many
        server kernels) a session is a group that gets as much CPU as the agent's whole
        group, whatever the policy of the processes inside it: so the script first gives
        that group the lowest weight (nice 19 in /proc/self/autogroup, which any process may
        do to its own group), then runs Chromium under SCHED_IDLE (`chrt --idle 0`).
        """
        prefix = []
        if self.cpus and shutil.which("taskset"):
            prefix += ["taskset", "-c", ",".join(str(cpu) for cpu in sorted(self.cpus))]
        if self.priority == "idle" and shutil.which("chrt"):
            prefix += ["chrt", "--idle", "0"]
        lines = ["#!/bin/sh"]
        if self.priority == "idle":
            # Braces: a kernel without autogroups (no such file) says nothing, and Chromium starts.
            lines.append(f"{{ echo {AUTOGROUP_NICE} > /proc/self/autogroup; }} 2>/dev/null")
        if len(lines) == 1 and not prefix:
            return str(self.executable)
        if self._wrapper is None:
            self._wrapper = tempfile.TemporaryDirectory(prefix="agent-browser-")
        script = Path(self._wrapper.name) / "chromium"
        command = " ".join(shlex.quote(part) for part in [*prefix, str(self.executable)])
        script.write_text("\n".join([*lines, f'exec {command} "$@"', ""]))
        script.chmod(0o700)
        return str(script)

    async def close(self) -> None:
        """Stop the browser and the Playwright driver; kill them if they do not stop in time."""
        browser, driver = self._browser, self._driver
        self._browser = self._driver = None
        if browser is not None:
            try:
                async with asyncio.timeout(CLOSE_SECONDS):
                    await browser.close()
            except Exception:  # a hung browser: stopping the driver below kills its process
                pass
        if driver is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await driver.stop()
        if self._wrapper is not None:
            self._wrapper.cleanup()
            self._wrapper = None


def _children() -> set[int]:
    """This process's child processes (Linux: from /proc; elsewhere none are known)."""
    me = str(os.getpid())
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


def _schedule(pid: int, priority: BrowserPriority, cpus: frozenset[int] | None) -> None:
    """Run a process under SCHED_IDLE when the priority says so (`chrt --idle 0`), and only
    on `cpus` when given (`taskset -c`)."""
    if priority == "idle":
        with contextlib.suppress(OSError, AttributeError):  # gone; not ours; not Linux
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(pid, cpus)


async def _close_session(session: Any) -> None:
    await session.close()


def _session(pool: ClientPool, policy: BrowserPolicy) -> BrowserSession:
    session = pool.kept(BROWSER_KEY)
    if (
        isinstance(session, BrowserSession)
        and session.executable == policy.executable
        and session.priority == policy.priority
        and session.cpus == policy.cpus
    ):
        return session
    session = BrowserSession(policy.executable, policy.priority, policy.cpus)
    pool.keep(BROWSER_KEY, session, _close_session)
    return session


def navigation_phases(entry: Mapping[str, Any] | None) -> dict[str, float]:
    """The result's phases from a PerformanceNavigationTiming entry (all from navigation start).

    Args:
        entry: The entry as JSON, or None when the page had none.

    Returns:
        dns_ms, connect_ms, tls_ms (HTTPS only), first_byte_ms (TTFB),
        dom_content_loaded_ms and load_ms; a phase the browser did not reach is left out.
    """
    if not entry:
        return {}

    def at(name: str) -> float:
        value = entry.get(name)
        return float(value) if isinstance(value, int | float) else 0.0

    start = at("startTime")
    phases = {
        "dns_ms": at("domainLookupEnd") - at("domainLookupStart"),
        "connect_ms": at("connectEnd") - at("connectStart"),
        "first_byte_ms": at("responseStart") - start,
        "dom_content_loaded_ms": at("domContentLoadedEventEnd") - start,
        "load_ms": at("loadEventEnd") - start,
    }
    if at("secureConnectionStart") > 0:
        phases["tls_ms"] = at("connectEnd") - at("secureConnectionStart")
    return {name: round(value, 3) for name, value in phases.items() if value >= 0}


def _script_function(script: str) -> Callable[[Any, Any], Awaitable[None]]:
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(browser_script_source(script), "<script>", "exec"), namespace)  # noqa: S102
    function: Callable[[Any, Any], Awaitable[None]] = namespace["__check__"]
    return function


def _script_error(error: BaseException) -> str:
    """`script line N: Type: text`, the line counted in the script as written."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == "<script>" and frame.lineno is not None:
            line = frame.lineno - 1
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if isinstance(error, AssertionError) and not text:
        described = "assertion failed"
    return f"script line {line}: {described}" if line is not None else f"script: {described}"


@dataclass
class _Run:
    """What one run collected, whatever way it ends."""

    console_errors: list[str]
    phases: dict[str, Any]
    code: int | None = None
    page: Any = None


def _with_console(message: str, run: _Run) -> str:
    if not run.console_errors:
        return message
    first = run.console_errors[0][:200]
    errors = f"{len(run.console_errors)} console error(s), first: {first}"
    return f"{message}; {errors}" if message else errors


async def _screenshot(run: _Run) -> bytes | None:
    if run.page is None:
        return None
    try:
        async with asyncio.timeout(2.0):
            shot: bytes = await run.page.screenshot(type="png")
            return shot
    except Exception:  # best effort: the verdict matters, the picture is a bonus
        return None


async def _load_and_script(check: Mapping[str, Any], context: Any, run: _Run) -> Verdict:
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import expect

    page = await context.new_page()
    run.page = page

    def on_console(message: Any) -> None:
        if message.type == "error" and len(run.console_errors) < MAX_CONSOLE_ERRORS:
            run.console_errors.append(str(message.text))

    def on_page_error(error: Any) -> None:
        if len(run.console_errors) < MAX_CONSOLE_ERRORS:
            run.console_errors.append(f"uncaught: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    url = str(check["url"])
    try:
        response = await page.goto(url, wait_until="load")
    except PlaywrightError as error:
        first = str(error.message).strip().splitlines()[0]
        return Verdict("error", f"could not load {url}: {first}")
    run.code = response.status if response is not None else None
    entry = await page.evaluate(_NAVIGATION)
    run.phases.update(navigation_phases(entry))
    if run.code is not None and run.code >= 400:
        return Verdict("fail", f"{url} answered {run.code}", run.code)
    script = check.get("script")
    if isinstance(script, str) and script.strip():
        try:
            await _script_function(script)(page, expect)
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as error:
            return Verdict("fail", _script_error(error), run.code)
    if check.get("failOnConsoleError") and run.console_errors:
        return Verdict("fail", "the page logged console errors", run.code)
    return Verdict("pass", None, run.code)


async def _finish(session: BrowserSession, context: Any) -> None:
    """Close the run's context (its pages, so a hung page's renderer goes with them); stop
    the whole browser when even that does not answer within `CLOSE_SECONDS` (the next run
    starts a fresh one). A timed-out run alone does not restart the browser: starting
    Chromium takes a second or more, and with short timeouts every next run would time out
    starting it."""
    if context is None:
        return
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await context.close()
    except Exception:
        await session.close()


async def check_browser(check: Mapping[str, Any], clients: ClientPool) -> Verdict:
    """Load `url` in headless Chromium, run `script`, and report timings and console errors.

    Args:
        check: The check as served: `url`, optional `script` and `failOnConsoleError`,
            `timeout_ms` (the whole run: launch, load and script), `thresholdMillis`.
        clients: The agent's pool, holding the browser policy and the running browser.

    Returns:
        "pass"; "fail" when the page answered 4xx/5xx, the script raised or asserted, the page
        logged console errors with `failOnConsoleError`, or the run was over `thresholdMillis`;
        "error" when browser checks are not allowed here, no browser is installed, the page
        could not be loaded or the run timed out (its pages are then closed). A run that did
        not pass carries a PNG screenshot of the page when there was one.
    """
    policy = clients.kept(POLICY_KEY)
    if not isinstance(policy, BrowserPolicy) or not policy.allowed:
        return Verdict("error", NOT_ALLOWED)
    if not policy.executable.is_file():
        return Verdict(
            "error",
            f"no browser at {policy.executable}: install Chromium (Debian: apt-get install "
            "chromium) or point --browser-path at it",
        )
    session = _session(clients, policy)
    session.runs += 1
    try:
        return await _run_browser(check, session)
    finally:
        session.runs -= 1


async def _run_browser(check: Mapping[str, Any], session: BrowserSession) -> Verdict:
    timeout_ms = int(check.get("timeout_ms") or 10_000)
    run = _Run(console_errors=[], phases={})
    start = time.perf_counter()
    context = None
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            browser = await session.browser()
            context = await browser.new_context()
            verdict = await _load_and_script(check, context, run)
    except TimeoutError:
        verdict = Verdict("error", f"timed out after {timeout_ms}ms", run.code)
    except BrowserMissing as error:
        verdict = Verdict("error", str(error))
    except Exception as error:  # launching or driving the browser failed
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        verdict = Verdict("error", f"browser: {type(error).__name__}: {first}".rstrip(": "))
    elapsed = (time.perf_counter() - start) * 1000
    run.phases["total_ms"] = round(elapsed, 3)
    run.phases["console_errors"] = len(run.console_errors)
    threshold = check.get("thresholdMillis")
    if verdict.status == "pass" and isinstance(threshold, int) and elapsed > threshold:
        verdict = Verdict("fail", f"took {elapsed:.1f}ms, over thresholdMillis {threshold}")
    screenshot = await _screenshot(run) if verdict.status != "pass" else None
    await _finish(session, context)
    message = _with_console(verdict.message or "", run) or None
    return Verdict(verdict.status, message, verdict.code or run.code, run.phases, screenshot)
