"""`--notify-url` webhooks: every event to every hook, signed, in order per hook, retried with
backoff. Used when the config repository declares no AlertRouting."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from agent.metrics import Metrics
from reconciler.core.notifications import payload
from reconciler.server.supervise import Supervisor

log = logging.getLogger("reconciler.server.notify")

# Told of every delivery: (hook URL, event, outcome, attempts, error or None).
Recorder = Callable[[str, dict[str, Any], str, int, str | None], None]

SIGNATURE_HEADER = "X-Canary-Reconciler-Signature-256"
EVENT_HEADER = "X-Canary-Reconciler-Event"


@dataclass(frozen=True)
class Hook:
    """A webhook: where to post, and whether it wants Slack's message shape."""

    url: str
    format: str = "json"  # json | slack


def parse_hooks(text: str | None) -> list[Hook]:
    """`URL[,URL...]`, each optionally prefixed `slack+` for a Slack-compatible payload."""
    hooks = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("slack+"):
            hooks.append(Hook(item.removeprefix("slack+"), "slack"))
        else:
            hooks.append(Hook(item))
    return hooks


REDACTED = "<redacted>"


def host_of(url: str) -> str:
    """`host[:port]` of a URL, the only part of a hook's URL a log line or a record names:
    a Slack webhook carries its token in the path, others in the query or the user info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of a URL that may be a token: the URL itself, its path and query, its last
    path segment, its query values and its user info."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    found = [url, path, parts.path.rstrip("/").rpartition("/")[2], parts.query]
    found += [value for _, value in parse_qsl(parts.query)]
    found += [parts.username or "", parts.password or ""]
    return tuple(f for f in found if len(f) >= 4)  # "/" or "v2" is no secret


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every occurrence of a secret replaced (longest first, so a URL goes
    before its path)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC of the body>`, the way GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """One queue and worker per hook, so a slow or failing hook never delays the others."""

    def __init__(
        self,
        hooks: list[Hook],
        secret: str | None,
        metrics: Metrics,
        clock: Callable[[], datetime],
        attempts: int = 6,
        first_delay: float = 1.0,
        loops: Supervisor | None = None,
        record: Recorder | None = None,
    ) -> None:
        self._hooks = hooks
        self._secret = secret
        self._metrics = metrics
        self._clock = clock
        self._attempts = attempts
        self._first_delay = first_delay
        self._loops = loops
        self._record = record
        self._queues: list[asyncio.Queue[dict[str, Any]]] = [asyncio.Queue() for _ in hooks]
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=10.0)
        self._tasks = [
            asyncio.create_task(self._deliver(hook, queue), name=f"notify {host_of(hook.url)}")
            for hook, queue in zip(self._hooks, self._queues, strict=True)
        ]

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event for every hook (returns at once)."""
        stamped = {"at": self._clock().isoformat(), **event}
        for queue in self._queues:
            queue.put_nowait(stamped)

    async def stop(self, wait_seconds: float = 5.0) -> None:
        """Give queued events a moment to go out, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), wait_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    async def _deliver(self, hook: Hook, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._post(hook, event)
            except Exception as error:  # noqa: BLE001 - one bad event must not stop the hook
                self._metrics.count("notifications_total", outcome="failed")
                problem = redact(str(error) or type(error).__name__, url_secrets(hook.url))
                self._note(hook, event, "failed", 0, problem)
                if self._loops is None:
                    log.exception(
                        "notification %s to %s failed", event.get("type"), host_of(hook.url)
                    )
                else:
                    self._loops.failed("notify", error, f"event {event.get('type')}")
            else:
                if self._loops is not None:
                    self._loops.succeeded("notify")
            finally:
                queue.task_done()

    def _note(
        self, hook: Hook, event: dict[str, Any], outcome: str, attempts: int, error: str | None
    ) -> None:
        if self._record is not None:
            self._record(hook.url, event, outcome, attempts, error)

    async def _post(self, hook: Hook, event: dict[str, Any]) -> None:
        assert self._client is not None
        body = orjson.dumps(payload(event, hook.format))
        headers = {"Content-Type": "application/json", EVENT_HEADER: str(event.get("type"))}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(hook.url, content=body, headers=headers)
                if response.status_code < 300:
                    self._metrics.count("notifications_total", outcome="delivered")
                    self._note(hook, event, "delivered", attempt, None)
                    return
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # the hook rejects it; retrying will not help
            except httpx.HTTPError as error:
                problem = redact(str(error) or type(error).__name__, url_secrets(hook.url))
            if attempt < self._attempts:
                log.warning(
                    "notification %s to %s failed (%s); retry %d in %.1fs",
                    event.get("type"), host_of(hook.url), problem, attempt, delay,
                )  # fmt: skip
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 300.0)
        self._metrics.count("notifications_total", outcome="failed")
        self._note(hook, event, "failed", attempt, problem)
        log.error(
            "gave up on notification %s to %s: %s", event.get("type"), host_of(hook.url), problem
        )
