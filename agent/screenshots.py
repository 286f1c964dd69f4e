"""Best-effort shipping of browser check screenshots, apart from the durable result rows.

A screenshot is a help for whoever looks at a failure, not a result: it waits in memory (a
few at most), is posted once, and is dropped (and counted) when the queue is full or the
control plane cannot take it. Result rows never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import httpx

from agent.answers import AnswerTooLarge, exchange
from agent.metrics import Metrics

log = logging.getLogger("agent")
# Pictures waiting to be posted; a newer one pushes the oldest out (a browser check runs at
# most about once a second, and each picture is well under a megabyte).
MAX_PENDING = 8
DROPPED = "screenshots_dropped_total"
SENT = "screenshots_sent_total"
HELP = {
    SENT: "Browser check screenshots the control plane stored.",
    DROPPED: "Browser check screenshots not delivered, by reason (queue_full, refused, "
    "unreachable, stopped).",
}


@dataclass(frozen=True)
class PendingShot:
    """A screenshot and the run it belongs to."""

    canary: str
    check: str
    started_at: datetime
    png: bytes


class ScreenshotQueue:
    """A small in-memory queue of screenshots, posted to `POST /api/agent/screenshots`."""

    def __init__(self, metrics: Metrics, capacity: int = MAX_PENDING) -> None:
        """Start empty; `metrics` counts what is sent and dropped."""
        self._metrics = metrics
        self._pending: deque[PendingShot] = deque()
        self._capacity = capacity
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, shot: PendingShot) -> None:
        """Queue `shot`, dropping the oldest waiting one when the queue is full."""
        if len(self._pending) >= self._capacity:
            self._pending.popleft()
            self._metrics.count(DROPPED, reason="queue_full")
        self._pending.append(shot)
        self.ready.set()

    def drop_all(self, reason: str) -> None:
        """Forget every waiting screenshot (counted under `reason`)."""
        if self._pending:
            self._metrics.count(DROPPED, len(self._pending), reason=reason)
        self._pending.clear()

    async def send_all(self, client: httpx.AsyncClient) -> None:
        """Post every waiting screenshot once; what the server refuses or misses is dropped."""
        self.ready.clear()
        while self._pending:
            shot = self._pending.popleft()
            try:
                response = await exchange(
                    client,
                    "POST",
                    "/api/agent/screenshots",
                    params={
                        "canary": shot.canary,
                        "check": shot.check,
                        "started_at": shot.started_at.isoformat(),
                    },
                    content=shot.png,
                    headers={"Content-Type": "image/png"},
                )
            except AnswerTooLarge as error:
                self._metrics.count(DROPPED, reason="refused")
                log.warning("screenshot of %s/%s not sent: %s", shot.canary, shot.check, error)
                continue
            except httpx.HTTPError as error:
                self._metrics.count(DROPPED, reason="unreachable")
                log.warning("screenshot of %s/%s not sent: %r", shot.canary, shot.check, error)
                continue
            if response.status == 200:
                self._metrics.count(SENT)
            else:
                self._metrics.count(DROPPED, reason="refused")
                log.warning(
                    "screenshot of %s/%s refused: %d %s",
                    shot.canary,
                    shot.check,
                    response.status,
                    response.text[:200],
                )
