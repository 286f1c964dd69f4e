"""Keeps events about canaries in an open maintenance window from going out (counted instead)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.metrics import Metrics
from reconciler.core.maintenance import MaintenanceIndex

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

    def __call__(self, event: dict[str, Any]) -> None:
        canary = event.get("canary")
        regions = event.get("regions_down") or []
        if isinstance(canary, str) and self._index().silenced(canary, regions, self._clock()):
            log.info("event %s for %s not notified: maintenance window", event.get("type"), canary)
            self._metrics.count(SUPPRESSED, reason="maintenance")
            return
        self._announce(event)
