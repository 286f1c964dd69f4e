"""Background loops that never stop silently.

Every loop of `reconcile serve` (reconcile, source watching, ingest writer, controllers,
site rebuilds, notifications, the local agent's flusher) reports its failures here: each
one is logged with its traceback, counted in `/metrics` as
`reconciler_loop_errors_total{loop=...}`, and kept as the loop's last error for
`/api/v1/status`; the loop then goes on, waiting longer after each consecutive failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.metrics import Metrics

log = logging.getLogger("reconciler.server.loops")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
# A loop body restarted after a failure counts as recovered once it has run this long.
RECOVERY_SECONDS = 10.0
# An error's message is shown in the status; long ones (a whole config value) are cut.
MAX_MESSAGE = 300
HELP = "Exceptions caught in a background loop of the server, by loop (each logged)."
LOOP_NAMES = (
    "reconcile",
    "follow-source",
    "ingest-writer",
    "incidents",
    "canary-controller",
    "site-rebuilds",
    "notify",
    "local-agent",
    "history",
    "agent-silence",
)


@dataclass
class LoopHealth:
    """One loop's record: its errors since start, and how it last ended."""

    errors: int = 0
    consecutive: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_ok_at: datetime | None = None

    def document(self) -> dict[str, Any]:
        """The loop as `/api/v1/status` shows it."""
        return {
            "ok": self.consecutive == 0,
            "errors": self.errors,
            "consecutive_errors": self.consecutive,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
        }


def backoff(consecutive: int, first: float = FIRST_BACKOFF, most: float = MAX_BACKOFF) -> float:
    """Seconds to wait after the `consecutive`-th failure in a row: 1, 2, 4, ... up to 60."""
    if consecutive <= 0:
        return 0.0
    return float(min(first * 2 ** min(consecutive - 1, 30), most))


class Supervisor:
    """The one place background loops report to; also runs a loop body again after it fails."""

    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], datetime],
        secrets: Callable[[], Iterable[str]] = tuple,
        first_backoff: float = FIRST_BACKOFF,
    ) -> None:
        """Args:
        metrics: the server's counters (`loop_errors_total` is added).
        clock: the current time.
        secrets: values never to show in a status (tokens, webhook secrets); replaced by ***.
        first_backoff: seconds after a first failure; doubled per failure in a row.
        """
        self._metrics = metrics
        self._clock = clock
        self._secrets = secrets
        self._first = first_backoff
        self._loops: dict[str, LoopHealth] = {}
        metrics.help.setdefault("loop_errors_total", HELP)
        for name in LOOP_NAMES:
            self.watch(name)

    def watch(self, name: str) -> None:
        """List a loop (with no errors yet) in the status and metrics."""
        if name not in self._loops:
            self._loops[name] = LoopHealth()
            self._metrics.count("loop_errors_total", 0, loop=name)

    def failed(self, name: str, error: BaseException, where: str = "") -> float:
        """Record a failure of loop `name`: logged with its traceback, counted, kept.

        Args:
            name: the loop.
            error: what it raised.
            where: what the loop was doing (e.g. `route checkout`), for the log and status.

        Returns:
            Seconds the loop should wait before trying again.
        """
        self.watch(name)
        health = self._loops[name]
        health.errors += 1
        health.consecutive += 1
        health.last_error_at = self._clock()
        message = f"{type(error).__name__}: {error}"
        health.last_error = self.redact((f"{where}: " if where else "") + message)
        self._metrics.count("loop_errors_total", loop=name)
        delay = backoff(health.consecutive, self._first)
        log.error(
            "%s loop failed%s (error %d in a row)",
            name,
            f" ({where})" if where else "",
            health.consecutive,
            exc_info=error,
        )
        return delay

    def succeeded(self, name: str) -> None:
        """Record that loop `name` went round without an error."""
        self.watch(name)
        health = self._loops[name]
        if health.consecutive:
            log.info("%s loop recovered after %d error(s) in a row", name, health.consecutive)
        health.consecutive = 0
        health.last_ok_at = self._clock()

    def delay(self, name: str) -> float:
        """Seconds loop `name` should wait because of its failures in a row (0 when healthy)."""
        health = self._loops.get(name)
        return backoff(health.consecutive, self._first) if health else 0.0

    async def run(self, name: str, body: Callable[[], Awaitable[object]]) -> None:
        """Run `body` until it returns (its loop finished on purpose) or is cancelled; when it
        raises, report it and run it again after a backoff.

        For loops whose body is itself a `while True` (a file watcher, a queue worker).
        """
        running = asyncio.get_running_loop()
        while True:
            # A body restarted after a failure that keeps running is healthy again.
            recovered = (
                running.call_later(RECOVERY_SECONDS, self.succeeded, name)
                if self.delay(name)
                else None
            )
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the point: reported, then restarted
                wait = self.failed(name, error)
            finally:
                if recovered is not None:
                    recovered.cancel()
            await asyncio.sleep(wait)

    def task(self, name: str, body: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        """`run` in a task named after the loop."""
        return asyncio.create_task(self.run(name, body), name=name)

    @property
    def failing(self) -> list[str]:
        """The loops whose last round failed."""
        return sorted(name for name, health in self._loops.items() if health.consecutive)

    def status(self) -> dict[str, dict[str, Any]]:
        """Every loop's record, by name."""
        return {name: health.document() for name, health in sorted(self._loops.items())}

    def gauges(self) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        """`loop_failing{loop}`: 1 while a loop's last round failed."""
        help_text = "1 while a background loop's last round failed."
        return [
            ("loop_failing", help_text, (("loop", name),), float(bool(health.consecutive)))
            for name, health in sorted(self._loops.items())
        ]

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by *** and cut to a status line's length."""
        for secret in self._secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
