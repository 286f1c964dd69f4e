"""The agent: pull config, run checks on schedule, spool results, ship them; never lose them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from agent.answers import MAX_CONFIG_BYTES, Answer, AnswerTooLarge, exchange
from agent.checks import ClientPool, result_row, run_check
from agent.checks.browser_check import BrowserPolicy, allow_browser_checks
from agent.checks.runner import describe_error
from agent.checks.series import CheckSeries
from agent.metrics import Metrics
from agent.scheduler import Scheduler
from agent.screenshots import HELP as SCREENSHOT_HELP
from agent.screenshots import PendingShot, ScreenshotQueue
from agent.settings import AgentSettings, SettingsError
from agent.spool import Spool
from agent.status_server import start_status_server
from schemas.wire import PULL_WAIT_HEADER

log = logging.getLogger("agent")

MAX_BACKOFF_SECONDS = 300.0
MAX_DOUBLINGS = 5  # back off to at most 32x the normal interval (and never past 5 minutes)
REVOKED_RETRY_SECONDS = 60.0
# Answers to a result POST that mean "never these bytes": too large (413), or unreadable
# (400, 422). The batch is halved until the server takes the parts or refuses single rows.
REFUSED = frozenset({400, 413, 422})
# Every reason a row can be lost for, so each series is on /metrics from the start.
DROP_REASONS = ("spool_full", "spool_corrupt", "http_400", "http_413", "http_422")

HELP = {
    "checks_run_total": "Check runs by type.",
    "checks_failed_total": "Check runs that failed or errored, by type and status.",
    "checks_degraded_total": "Check runs that passed slower than degradedThresholdMillis.",
    "check_retries_total": "Retries check runs made (attempts after the first), by type.",
    "checks_skipped_total": "Check runs not started: the previous run was still running.",
    "pulls_total": "Config pulls by outcome.",
    "pushes_total": "Result batches sent, by outcome.",
    "rows_shipped_total": "Result rows the control plane accepted or already had.",
    "rows_rejected_total": "Result rows the control plane dropped, by reason.",
}


def _jittered(seconds: float, rng: random.Random) -> float:
    return seconds * rng.uniform(0.8, 1.2)


class Agent:
    """One probe process. Stateless apart from its spool of unshipped results."""

    def __init__(
        self,
        settings: AgentSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        api_transport: httpx.AsyncBaseTransport | None = None,
        on_long_lived: Callable[[], None] | None = None,
    ) -> None:
        """Set the agent up; nothing runs before `run()`.

        Args:
            settings: What the agent is configured with.
            clock: The wall clock (UTC, aware).
            rng: Randomness for start offsets and jitter.
            api_transport: How to reach the control plane (tests hand in the app itself);
                by default over the network to `settings.url`.
            on_long_lived: Called when objects that live as long as the agent were just made:
                a config applied, the browser started by the first browser check. `agent
                run` freezes them out of the collector's full passes
                (`agent.process.freeze_survivors`); an agent inside another process (tests)
                leaves that process's collector alone.
        """
        self.settings = settings
        self._on_long_lived = on_long_lived or (lambda: None)
        self._browser_started = False
        self._api_transport = api_transport
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = Metrics("agent", {**HELP, **SCREENSHOT_HELP})
        self.screenshots = ScreenshotQueue(self.metrics)
        self.series = CheckSeries()
        self.spool = Spool(settings.spool, settings.buffer_capacity)
        self.scheduler = Scheduler(self._run_check, self.rng, self._skipped)
        self._skips_logged: set[tuple[str, str]] = set()
        self.etag: str | None = None
        self.ready = False
        self.connected = True
        self.last_pull: datetime | None = None
        self.last_push: datetime | None = None
        self._reconnect = asyncio.Event()
        self._reconnect_timer: asyncio.TimerHandle | None = None
        # Why the API client was last closed under the requests in flight (a disconnect).
        self._cut_short_because = ""
        self._pull_now = asyncio.Event()
        # Whether the control plane holds pulls (a long poll): assumed until a held pull
        # comes back at once without saying it was held.
        self.server_holds_pulls = settings.pull_wait > 0
        self._ship_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pool: ClientPool | None = None
        self._api: httpx.AsyncClient | None = None
        self.refused_rows: Counter[str] = Counter()  # rows the server refused one by one
        self.status_port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; then stop scheduling, ship what can be shipped, return."""
        status = None
        if self.settings.listen is not None:
            host, port = self.settings.listen
            try:
                status = await start_status_server(self._status, host, port)
            except OSError as error:  # the port is taken, the address is not this machine's
                why = os.strerror(error.errno) if error.errno else str(error)
                raise SettingsError(f"--listen {host}:{port}: cannot listen there: {why}") from None
            self.status_port = int(status.sockets[0].getsockname()[1])
            log.info(
                "status endpoint on http://%s:%d (/ready, /disconnect, /metrics)",
                host,
                self.status_port,
            )
        limits = self.settings.response_limits
        async with ClientPool(size=self.settings.http_clients, limits=limits) as pool:
            self._pool = pool
            policy = BrowserPolicy(
                self.settings.allow_browser_checks,
                self.settings.browser_path,
                self.settings.browser_priority,
                self.settings.browser_cpus,
            )
            allow_browser_checks(pool, policy)
            self._api = self._new_api()
            tasks = [
                asyncio.create_task(self._pull_loop(), name="pull"),
                asyncio.create_task(self._ship_loop(), name="ship"),
                asyncio.create_task(self._screenshot_loop(), name="screenshots"),
            ]
            await self._stopping.wait()
            log.info("stopping: no new check runs; shipping buffered results")
            if self._reconnect_timer is not None:
                self._reconnect_timer.cancel()
            for task in tasks:
                task.cancel()
            for task, outcome in zip(
                tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
            ):
                # A loop that died before the stop must not turn a clean stop into exit 1.
                if isinstance(outcome, Exception):
                    log.error("the %s loop had failed: %r", task.get_name(), outcome)
            await self.scheduler.stop(wait_seconds=self.settings.shutdown_timeout / 2)
            # Disconnected means no API traffic, also on the way out: the spool keeps the rows.
            if self.connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ship_all(), self.settings.shutdown_timeout / 2)
            self.screenshots.drop_all("stopped")
            api, self._api = self._api, None
            if api is not None:  # None while disconnected: `disconnect()` closed it already
                await api.aclose()
        if status is not None:
            status.close()
        left = self.spool.depth()
        self.spool.close()
        log.info("stopped; %d result rows stay spooled for the next start", left)

    def stop(self) -> None:
        """Ask the agent to stop (SIGTERM)."""
        self._stopping.set()

    def pull_now(self) -> None:
        """Pull the config as soon as the pull under way, if any, ends (SIGHUP: as daemons
        take it, read the configuration again, rather than the default of dying)."""
        log.info("SIGHUP: pulling the config now")
        self._pull_now.set()

    def disconnect(self, asked_by: str = "SIGUSR1") -> None:
        """Drop the API connection, keep probing and spooling; reconnect after a while.

        Args:
            asked_by: Who asked (`SIGUSR1`, `POST /disconnect`): named in the log lines of
                the pull and the ship the disconnect cuts short, which would otherwise
                report the closed connection as an error without a reason.
        """
        if not self.connected:
            return
        log.warning(
            "disconnecting from the control plane (%s); checks keep running, reconnecting in %.0fs",
            asked_by,
            self.settings.reconnect_after,
        )
        self._cut_short_because = f"disconnected on request ({asked_by})"
        self.connected = False
        self.ready = False
        api, self._api = self._api, None
        if api is not None:
            asyncio.get_running_loop().create_task(api.aclose())
        self._reconnect.clear()
        self._reconnect_timer = asyncio.get_running_loop().call_later(
            self.settings.reconnect_after, self._reconnect_now
        )

    def _reconnect_now(self) -> None:
        """End a disconnect: pull and ship at once, not when the loops would next wake."""
        self._reconnect_timer = None
        if self.connected or self._stopping.is_set():
            return
        log.info("reconnecting to the control plane")
        self.connected = True
        self._api = self._new_api()
        self._reconnect.set()
        self._pull_now.set()
        self._ship_now.set()

    def _new_api(self) -> httpx.AsyncClient:
        # Only the codings `agent.answers` inflates within its limits.
        return httpx.AsyncClient(
            base_url=self.settings.url,
            headers={
                "Authorization": f"Bearer {self.settings.token}",
                "Accept-Encoding": "gzip, deflate",
            },
            timeout=httpx.Timeout(10.0),
            transport=self._api_transport,
        )

    async def _connected(self) -> httpx.AsyncClient:
        """The API client, waiting out a disconnect first."""
        while not self.connected:
            await self._reconnect.wait()
        assert self._api is not None
        return self._api

    # -- config ------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        failures = 0
        while True:
            delay = await self._pull_once()
            if delay is None:
                failures = 0
                # A server holding pulls answered when the config changed or the wait ended:
                # ask again at once. Otherwise poll.
                if self.server_holds_pulls:
                    continue
                delay = self.settings.pull_interval
            else:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, delay * 2 ** min(failures - 1, MAX_DOUBLINGS))
            with contextlib.suppress(TimeoutError):  # a reconnect cuts the wait short
                await asyncio.wait_for(self._pull_now.wait(), _jittered(delay, self.rng))
            self._pull_now.clear()

    async def _pull_once(self) -> float | None:
        """Pull once; None on success, else the base delay before retrying."""
        api = await self._connected()
        self._pull_now.clear()  # this is the pull a reconnect asked for
        headers = {"If-None-Match": self.etag} if self.etag else {}
        wait = self.settings.pull_wait if self.etag else 0.0
        asked = time.monotonic()
        try:
            response = await exchange(
                api,
                "GET",
                "/api/agent/targets",
                ok_limit=MAX_CONFIG_BYTES,
                headers=headers,
                params={"wait": f"{wait:g}"} if wait else None,
                timeout=httpx.Timeout(10.0, read=wait + 10.0),
            )
        except AnswerTooLarge as error:
            # An endless or huge body: another server, a portal. Not read past the limit.
            self.metrics.count("pulls_total", outcome="too_large")
            log.warning(
                "config pull: %s; is --url the control plane? keeping the last config", error
            )
            return self.settings.pull_interval / 2
        except httpx.HTTPError as error:
            self._pull_failed(api, error)
            return self.settings.pull_interval / 2
        # Held: the server says so, and an unchanged config came back only when the wait
        # ended (never spin on a server answering at once).
        if wait > 0:
            self.server_holds_pulls = PULL_WAIT_HEADER in response.headers and (
                response.status != 304 or time.monotonic() - asked >= wait / 2
            )
        return self._pulled(response)

    def _pull_failed(self, api: httpx.AsyncClient, error: httpx.HTTPError) -> None:
        """Count and log a pull that got no answer, saying why even when `error` has no
        text (a connection closed under the request is a `ReadError('')`)."""
        if api is not self._api:  # `disconnect()` closed the client under this pull
            log.info("config pull cut short: %s; keeping the last config", self._cut_short_because)
            return
        self.metrics.count("pulls_total", outcome="unreachable")
        log.warning("config pull failed (%s); keeping the last config", describe_error(error))

    def _pulled(self, response: Answer) -> float | None:
        """Act on a pull's answer; None when the agent runs a good config, else the base
        delay before retrying."""
        if response.status == 304:
            self.metrics.count("pulls_total", outcome="not_modified")
        elif response.status == 200:
            document = _config_document(response)
            if document is None:
                # A proxy's page, or --url naming another server: not a reason to stop pulling.
                self.metrics.count("pulls_total", outcome="invalid")
                log.warning(
                    "config pull answered 200 without a config document (%s); is --url the "
                    "control plane? keeping the last config",
                    _error_text(response)[:80] or "an empty body",
                )
                return self.settings.pull_interval / 2
            self.metrics.count("pulls_total", outcome="updated")
            self._apply_config(document, response.headers.get("etag"))
        elif response.status in (401, 403):
            self.metrics.count("pulls_total", outcome=f"denied_{response.status}")
            self._revoked(response)
            return max(self.settings.pull_interval, REVOKED_RETRY_SECONDS)
        else:
            self.metrics.count("pulls_total", outcome="server_error")
            log.warning("config pull answered %d; keeping the last config", response.status)
            return self.settings.pull_interval / 2
        if not self.etag:
            self.server_holds_pulls = False  # nothing to hold a pull on: poll
        self.last_pull = self.clock()
        self.ready = True
        return None

    def _apply_config(self, document: dict[str, Any], etag: str | None) -> None:
        self.etag = etag
        added, changed, removed = self.scheduler.update(document["canaries"])
        self._on_long_lived()  # the config's canaries live until the next one
        log.info(
            "config %s for %s in %s: %d canaries (%d added, %d changed, %d removed)",
            (self.etag or "").strip('"')[:12],
            document.get("agent"),
            document.get("region"),
            len(document["canaries"]),
            added,
            changed,
            removed,
        )

    def _revoked(self, response: Answer) -> None:
        was_running = bool(self.scheduler.canaries)
        self.scheduler.clear()
        self.etag = None
        self.ready = False
        reason = _error_text(response)
        log.error(
            "the control plane refused this agent (%d %s)%s; retrying slowly",
            response.status,
            reason,
            ": stopped all checks and cleared the config" if was_running else "",
        )

    # -- checks and results ------------------------------------------------------------

    async def _run_check(self, canary_id: str, check: Mapping[str, Any]) -> None:
        assert self._pool is not None
        outcome = await run_check(check, self._pool, self.clock)
        kind = str(check.get("type"))
        if kind == "browser" and not self._browser_started:
            self._browser_started = True
            self._on_long_lived()  # Playwright's modules and the browser session
        self.metrics.count("checks_run_total", type=kind)
        self.series.record(canary_id, str(check.get("name")), kind, outcome)
        if outcome.status in ("fail", "error"):
            self.metrics.count("checks_failed_total", type=kind, status=outcome.status)
        elif outcome.status == "degraded":
            self.metrics.count("checks_degraded_total", type=kind)
        if outcome.retries:
            self.metrics.count("check_retries_total", outcome.retries, type=kind)
        row = result_row(canary_id, str(check.get("name")), outcome).model_dump(mode="json")
        if outcome.screenshot is not None:
            shot = PendingShot(
                canary_id, str(check.get("name")), outcome.started_at, outcome.screenshot
            )
            self.screenshots.offer(shot)
        # Rows dropped for room are counted by the spool, which logs once when it fills up
        # and once when it has room again, not once per row.
        await self.spool.append_async([row])
        if self.spool.depth() >= self.settings.buffer_capacity // 2:
            self._ship_now.set()

    def _skipped(self, canary_id: str, check: Mapping[str, Any]) -> None:
        """A run not started because the previous one still runs: counted, logged once per
        check (a check that always overruns would otherwise log on every tick)."""
        name = str(check.get("name"))
        self.metrics.count("checks_skipped_total", type=str(check.get("type")))
        if (canary_id, name) not in self._skips_logged:
            self._skips_logged.add((canary_id, name))
            log.warning(
                "check %r of %s was still running when due again; skipped that run "
                "(counted in agent_checks_skipped_total)",
                name,
                canary_id,
            )

    async def _screenshot_loop(self) -> None:
        """Post browser check screenshots as they come (best effort, apart from the rows)."""
        while True:
            await self.screenshots.ready.wait()
            await self.screenshots.send_all(await self._connected())

    async def _ship_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ship_now.wait(), self.settings.flush_interval)
            self._ship_now.clear()
            if not self.connected:
                continue
            if await self._ship_all():
                failures = 0
            else:
                failures += 1
                doublings = min(failures, MAX_DOUBLINGS)
                backoff = min(MAX_BACKOFF_SECONDS, self.settings.flush_interval * 2**doublings)
                await asyncio.sleep(_jittered(backoff, self.rng))

    async def _ship_all(self) -> bool:
        """Send spooled rows oldest first, in full batches, until fewer than a batch remain
        (they go with the next flush); False on a failure."""
        while self.spool.depth() and self.connected:
            ids, rows = await self.spool.peek_ids_async(self.settings.batch_size)
            if not rows:
                return True
            if not await self._deliver(ids, rows):
                return False
            if len(rows) < self.settings.batch_size:
                return True
        return True

    async def _deliver(self, ids: list[int], rows: list[dict[str, Any]]) -> bool:
        """Send one batch; a part the server refuses as a whole is halved and sent again.

        Each part is acked once it is settled: stored, or, for a single row the server still
        refuses (400, 413, 422) and so will never take, counted in `refused_rows` by status.
        Refused rows get one warning line per batch, however many they are.

        Args:
            ids: The spool's marker of each row.
            rows: The rows, oldest first.

        Returns:
            True when every row is settled; False when a 5xx or transport error stopped it
            (the unsettled rows stay spooled for a retry).
        """
        parts = deque([(0, len(rows))])
        refused: Counter[int] = Counter()
        why: dict[int, str] = {}
        try:
            while parts:
                start, end = parts.popleft()
                status, text = await self._post(rows[start:end])
                if status in REFUSED and end - start > 1:
                    middle = (start + end) // 2
                    parts.extendleft([(middle, end), (start, middle)])
                    continue
                if status in REFUSED:
                    refused[status] += 1
                    why.setdefault(status, text)
                    self.refused_rows[f"http_{status}"] += 1
                elif status != 200:
                    return False
                await self.spool.ack_async(ids[end - 1])
            return True
        finally:
            if refused:  # also when a failure or a stop cut the batch short
                reasons = "; ".join(f"{n} with {code}: {why[code]}" for code, n in refused.items())
                log.warning(
                    "the control plane refused %d of %d rows one by one (%s); dropped them, "
                    "counted in agent_dropped_rows_total",
                    refused.total(),
                    len(rows),
                    reasons,
                )

    async def _post(self, rows: list[dict[str, Any]]) -> tuple[int, str]:
        """POST rows as one batch; the answer's status (0 without one) and error text.

        A 200 is counted here (shipped, duplicate and server-dropped rows). Other answers
        are logged here only when the rows stay spooled; refusals are the caller's to report.
        """
        api = self._api
        if api is None:
            return 0, "disconnected"
        body = orjson.dumps({"results": rows, "sent_at": self.clock().isoformat()})
        try:
            response = await exchange(
                api,
                "POST",
                "/api/agent/results",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except AnswerTooLarge as error:
            # The rows may have been stored: sent again, they are counted as duplicates.
            self.metrics.count("pushes_total", outcome="too_large")
            log.warning(
                "shipping %d rows: %s; is --url the control plane? they stay spooled",
                len(rows),
                error,
            )
            return 0, str(error)
        except httpx.HTTPError as error:
            return 0, self._post_failed(api, len(rows), error)
        status = response.status
        if status != 200:
            self.metrics.count("pushes_total", outcome=f"http_{status}")
            if status not in REFUSED:
                log.warning("shipping %d rows answered %d; they stay spooled", len(rows), status)
            return status, _error_text(response)
        outcome = _receipt(response)
        if outcome is None:
            self.metrics.count("pushes_total", outcome="invalid")
            log.warning(
                "shipping %d rows answered 200 without a receipt (%s); they stay spooled",
                len(rows),
                _error_text(response)[:80] or "an empty body",
            )
            return 0, "an answer that is not a receipt"
        self.metrics.count("pushes_total", outcome="ok")
        self.metrics.count("rows_shipped_total", outcome["accepted"], outcome="accepted")
        self.metrics.count("rows_shipped_total", outcome["duplicates"], outcome="duplicate")
        for reason, count in Counter(outcome.get("dropped", {})).items():
            self.metrics.count("rows_rejected_total", count, reason=reason)
        self.last_push = self.clock()
        return status, ""

    def _post_failed(self, api: httpx.AsyncClient, rows: int, error: httpx.HTTPError) -> str:
        """Count and log a batch that got no answer; why, never an empty reason."""
        if api is not self._api:  # `disconnect()` closed the client under this batch
            why = self._cut_short_because
            log.info("shipping %d rows cut short: %s; they stay spooled", rows, why)
            return why
        why = describe_error(error)
        self.metrics.count("pushes_total", outcome="unreachable")
        log.warning("shipping %d rows failed (%s); they stay spooled", rows, why)
        return why

    # -- status endpoint ---------------------------------------------------------------

    def _status(self, method: str, path: str) -> tuple[int, str, bytes]:
        if path == "/ready":
            if self.ready and self.connected:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not ready\n"
        if path == "/disconnect":
            if method != "POST":
                return 405, "text/plain", b"use POST\n"
            self.disconnect("POST /disconnect")
            return 200, "text/plain", b"disconnected; reconnecting later\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self._metrics().encode()
        return 404, "text/plain", b"not found\n"

    def _metrics(self) -> str:
        lateness = self.scheduler.lateness
        recent = sorted(lateness.recent[-2000:])
        p99 = recent[int(len(recent) * 0.99) - 1] if recent else 0.0
        gauges: list[tuple[str, str, tuple[tuple[str, str], ...], float]] = [
            ("buffer_rows", "Result rows waiting to be shipped.", (), self.spool.depth()),
            ("spooled_rows", "Result rows in the spool file.", (), self.spool.depth()),
            *self._dropped_gauges(),
            ("canaries", "Canaries scheduled.", (), len(self.scheduler.canaries)),
            ("ready", "1 when a config was pulled and the API is connected.", (),
             float(self.ready and self.connected)),
            ("connected", "0 while disconnected (SIGUSR1 or /disconnect).", (),
             float(self.connected)),
            ("last_pull_timestamp_seconds", "Last successful config pull.", (),
             self.last_pull.timestamp() if self.last_pull else 0.0),
            ("last_push_timestamp_seconds", "Last successful result push.", (),
             self.last_push.timestamp() if self.last_push else 0.0),
            ("schedule_lateness_p99_seconds", "p99 of how late recent runs started.", (), p99),
            ("schedule_lateness_max_seconds", "Latest run start vs plan, worst case.", (),
             lateness.worst_seconds),
        ]  # fmt: skip
        return self.metrics.render(gauges) + self.series.render()

    def _dropped_gauges(self) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        counts = {**self.spool.dropped_by_reason, **self.refused_rows}
        return [
            ("dropped_rows_total", "Rows lost without reaching the control plane, by reason.",
             (("reason", reason),), counts.get(reason, 0))
            for reason in DROP_REASONS
        ]  # fmt: skip


def _json_object(response: Answer) -> dict[str, Any] | None:
    """The answer's body as a JSON object, or None."""
    try:
        document = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _config_document(response: Answer) -> dict[str, Any] | None:
    """A pulled config (`{"canaries": [{"id": ...}, ...], ...}`), or None for anything else."""
    document = _json_object(response)
    if document is None:
        return None
    canaries = document.get("canaries")
    if not isinstance(canaries, list):
        return None
    if not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in canaries):
        return None
    return document


def _receipt(response: Answer) -> dict[str, Any] | None:
    """The control plane's receipt for shipped rows (`accepted`, `duplicates`, `dropped`)."""
    document = _json_object(response)
    if document is None:
        return None
    counts = (document.get("accepted"), document.get("duplicates"))
    if not all(isinstance(n, int) for n in counts):
        return None
    if not isinstance(document.get("dropped", {}), dict):
        return None
    return document


def _error_text(response: Answer) -> str:
    """The error an answer gives (`{"error": ...}` or its text), cut to one short line."""
    error = (_json_object(response) or {}).get("error")
    text = error if isinstance(error, str) else response.text
    return " ".join(text.split())[:200]
