"""Keeps events about canaries in an open maintenance window from going out (counted instead)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.metrics import Metrics
from reconciler.core.maintenance import MaintenanceIndex
from reconciler.core.routing import Notification

log = logging.getLogger("reconciler.server.controllers.maintenance")

SUPPRESSED = "notifications_suppressed_total"


class MaintenanceGate:
    """An `announce` callback that drops incident events of canaries under maintenance.

    Sits between the controllers and the notifier (`server/main.py`), so an event kept quiet
    is never queued for a webhook: it is logged and counted in
    `notifications_suppressed_total{reason="maintenance"}`. Events about no canary (silent
    agents, canary deployments) pass.
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
        metrics.help.setdefault(
            SUPPRESSED, "Events not notified because a maintenance window covered them."
        )
        metrics.count(SUPPRESSED, 0, reason="maintenance")

    def silences(self, event: dict[str, Any]) -> bool:
        """Whether an open window covers the event's canary (in the regions it names)."""
        canary = event.get("canary")
        regions = event.get("regions_down") or []
        return isinstance(canary, str) and self._index().silenced(canary, regions, self._clock())

    def __call__(self, event: dict[str, Any]) -> None:
        if self.silences(event):
            log.info(
                "event %s for %s not notified: maintenance window",
                event.get("type"), event.get("canary"),
            )  # fmt: skip
            self._metrics.count(SUPPRESSED, reason="maintenance")
            return
        self._announce(event)

    def holds(self, reminder: Notification) -> bool:
        """Whether to hold a reminder back: every alert still firing in it is of a canary
        under maintenance now (an incident opened before the window). Counted like events."""
        if not reminder.firing or not all(self.silences(e) for e in reminder.firing):
            return False
        log.info("reminder to %s held: maintenance window", reminder.receiver)
        self._metrics.count(SUPPRESSED, reason="maintenance")
        return True
