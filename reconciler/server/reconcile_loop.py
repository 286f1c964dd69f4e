"""Coalesces reconcile triggers (file changes, polls, webhooks) into one reconcile at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ReconcileLoop:
    """Runs `reconcile(reasons)` once per burst of triggers, never two at a time."""

    def __init__(self, reconcile: Callable[[str], Awaitable[object]], debounce: float) -> None:
        """Args:
        reconcile: called with the reasons of a burst, joined by commas.
        debounce: seconds a burst of triggers is given to settle.
        """
        self._reconcile = reconcile
        self._debounce = debounce
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile soon, saying why."""
        self._reasons.add(reason)
        self._wake.set()

    async def run(self) -> None:
        """Reconcile after every burst of triggers, until cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce)  # let a burst of file events settle
            self._wake.clear()
            reasons, self._reasons = self._reasons, set()
            await self._reconcile(", ".join(sorted(reasons)))

    async def poll(self, interval: float) -> None:
        """Trigger a reconcile every `interval` seconds (a fetched mirror), until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.trigger("poll")
