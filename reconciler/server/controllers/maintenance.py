"""Keeps events about canaries in an open maintenance window from going out (counted instead),
and pages at the window's end for an incident that opened in it and is still open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.metrics import Metrics
from reconciler.core.maintenance import MaintenanceIndex
from reconciler.core.routing import Notification, alert_key

log = logging.getLogger("reconciler.server.controllers.maintenance")

SUPPRESSED = "notifications_suppressed_total"
# How often held opens are looked at again: a window closed early through the operator API
# or removed by a commit ends without any event, so its end is noticed by looking.
RECHECK_SECONDS = 1.0


class MaintenanceGate:
    """An `announce` callback that holds back incident opens of canaries under maintenance.

    Sits between the controllers and the notifier (`server/main.py`), so an event kept quiet
    is never queued for a webhook: it is logged and counted in
    `notifications_suppressed_total{reason="maintenance"}`. The rules:

    - an `incident_opened` the window covers is held, not dropped: once no open window covers
      it any more, it is announced (the incident outlasted the window: someone must look);
    - an `incident_resolved` of a held open ends both quietly (the outage began and ended
      inside the window: nobody was paged, nobody needs telling it is over);
    - any other `incident_resolved` always goes out, window or not: its open was notified,
      and what a pager opened must be closed.

    Events about no canary (silent agents, canary deployments) pass.
    """

    def __init__(
        self,
        announce: Callable[[dict[str, Any]], None],
        index: Callable[[], MaintenanceIndex],
        clock: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        """Args:
        announce: where the events that are not suppressed go.
        index: the served revision's windows (replaced when a revision is published).
        clock: the current time.
        metrics: the server's counters.
        """
        self._announce = announce
        self._index = index
        self._clock = clock
        self._metrics = metrics
        # Opens held back by a window, by alert key (`incident-<id>`), oldest first.
        self._held: dict[str, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        metrics.help.setdefault(
            SUPPRESSED, "Events not notified because a maintenance window covered them."
        )
        metrics.count(SUPPRESSED, 0, reason="maintenance")

    @property
    def held(self) -> list[dict[str, Any]]:
        """The incident opens waiting for their window to close, oldest first."""
        return list(self._held.values())

    def silences(self, event: dict[str, Any]) -> bool:
        """Whether an open window covers the event's canary (in the regions it names)."""
        canary = event.get("canary")
        regions = event.get("regions_down") or []
        return isinstance(canary, str) and self._index().silenced(canary, regions, self._clock())

    def __call__(self, event: dict[str, Any]) -> None:
        # A window that closed since the last look releases its opens before anything newer.
        self.release_due()
        kind = event.get("type")
        key = alert_key(event)
        if kind == "incident_resolved" and key in self._held:
            del self._held[key]
            log.info(
                "%s for %s opened and resolved inside a maintenance window: not notified",
                key, event.get("canary"),
            )  # fmt: skip
            self._metrics.count(SUPPRESSED, reason="maintenance")
            return
        if kind == "incident_opened" and key is not None and self.silences(event):
            self._held[key] = event
            log.info(
                "event %s for %s held: maintenance window (sent when it closes, if still open)",
                kind, event.get("canary"),
            )  # fmt: skip
            self._metrics.count(SUPPRESSED, reason="maintenance")
            self._schedule()
            return
        self._announce(event)

    def release_due(self) -> list[dict[str, Any]]:
        """Announce the held opens no open window covers any more (their incidents are still
        open: a resolve would have ended them).

        Returns:
            The events announced.
        """
        released = [event for event in self._held.values() if not self.silences(event)]
        for event in released:
            del self._held[str(alert_key(event))]
            log.info(
                "event %s for %s released: its maintenance window closed with the incident open",
                event.get("type"), event.get("canary"),
            )  # fmt: skip
            self._announce(event)
        return released

    def _schedule(self) -> None:
        """Look again in a moment while opens are held (on the running loop; a caller without
        one, such as a test, calls `release_due` itself)."""
        if self._timer is not None or not self._held:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(RECHECK_SECONDS, self._recheck)

    def _recheck(self) -> None:
        self._timer = None
        try:
            self.release_due()
        except Exception:  # noqa: BLE001 - the next look tries again
            log.exception("releasing held incident events failed")
        self._schedule()

    def holds(self, reminder: Notification) -> bool:
        """Whether to hold a reminder back: every alert still firing in it is of a canary
        under maintenance now (an incident opened before the window). Counted like events."""
        if not reminder.firing or not all(self.silences(e) for e in reminder.firing):
            return False
        log.info("reminder to %s held: maintenance window", reminder.receiver)
        self._metrics.count(SUPPRESSED, reason="maintenance")
        return True
