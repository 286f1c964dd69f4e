"""Coalesces reconcile triggers (file changes, polls, webhooks) into one reconcile at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from reconciler.server.supervise import Supervisor

RETRY = "retry after an error"


class ReconcileLoop:
    """Runs `reconcile(reasons)` once per burst of triggers, never two at a time.

    A reconcile that raises is reported to the supervisor and tried again after its backoff;
    triggers that arrive meanwhile join that retry.
    """

    def __init__(
        self,
        reconcile: Callable[[str], Awaitable[object]],
        debounce: float,
        loops: Supervisor,
    ) -> None:
        """Args:
        reconcile: called with the reasons of a burst, joined by commas.
        debounce: seconds a burst of triggers is given to settle.
        loops: where failures are reported.
        """
        self._reconcile = reconcile
        self._debounce = debounce
        self._loops = loops
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
            try:
                await self._reconcile(", ".join(sorted(reasons)))
            except Exception as error:  # noqa: BLE001 - reported; the loop goes on
                wait = self._loops.failed("reconcile", error)
                await asyncio.sleep(wait)
                self.trigger(RETRY)

    async def poll(self, interval: float) -> None:
        """Trigger a reconcile every `interval` seconds (a fetched mirror), until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.trigger("poll")
