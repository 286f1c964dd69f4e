"""The control plane's own agent: runs the canaries selected with `local`, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from agent.checks import ClientPool, result_row, run_check
from agent.scheduler import Scheduler
from reconciler.core.selector import LOCAL
from reconciler.server.control_plane import ControlPlane

log = logging.getLogger("reconciler.local_agent")

FLUSH_ROWS = 500
# Rows kept while storing fails (the newest); older ones are dropped and counted.
MAX_PENDING_ROWS = 50_000


class LocalAgent:
    """Runs `local` derived canaries with the agent's scheduler and check runner.

    Results take the same path as a remote agent's: validated row by row by the control
    plane and stored through the ingest queue, as agent `local` in the control plane's region.
    """

    def __init__(self, control: ControlPlane, flush_interval: float = 1.0) -> None:
        self._control = control
        self._flush_interval = flush_interval
        self._rows: list[dict[str, Any]] = []
        self._scheduler = Scheduler(self._run)
        self._pool = ClientPool(size=4)
        self._flusher: asyncio.Task[None] | None = None
        self._etag: str | None = None

    async def start(self) -> None:
        self._control.metrics.help.setdefault(
            "local_results_dropped_total",
            "Local agent results dropped because they could not be stored (oldest first).",
        )
        await self._pool.__aenter__()
        self._flusher = asyncio.create_task(self._flush_loop(), name="local-agent-flush")
        self._control.on_publish.append(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Follow the control plane's current config for agent `local`."""
        config = self._control.configs.get(LOCAL)
        if config is None:
            if self._scheduler.canaries:
                log.info("no canary selects 'local' any more; stopping local checks")
            self._etag = None
            self._scheduler.clear()
            return
        if config.etag == self._etag:
            return
        self._etag = config.etag
        added, changed, removed = self._scheduler.update(orjson.loads(config.body)["canaries"])
        log.info(
            "local checks: %d canaries (%d added, %d changed, %d removed)",
            len(self._scheduler.canaries),
            added,
            changed,
            removed,
        )

    async def _run(self, canary_id: str, check: Mapping[str, Any]) -> None:
        outcome = await run_check(check, self._pool, self._control.clock)
        self._rows.append(result_row(canary_id, check["name"], outcome).model_dump(mode="json"))
        if len(self._rows) >= FLUSH_ROWS:
            await self._store()

    async def _flush(self) -> None:
        """Store the rows run so far; on failure they are kept for the next try (bounded)."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            await self._control.ingest(LOCAL, rows, None)
        except Exception:
            # A re-sent row is a duplicate, never a second row: keeping them is safe.
            pending = rows + self._rows
            self._rows = pending[-MAX_PENDING_ROWS:]
            dropped = len(pending) - len(self._rows)
            if dropped:
                self._control.metrics.count("local_results_dropped_total", dropped)
            raise

    async def _store(self) -> bool:
        """`_flush`, with a failure reported to the supervisor; whether it stored."""
        loops = self._control.loops
        try:
            await self._flush()
        except Exception as error:  # noqa: BLE001 - a failed insert must not stop local checks
            loops.failed("local-agent", error, f"storing {len(self._rows)} local results")
            return False
        loops.succeeded("local-agent")
        return True

    async def _flush_loop(self) -> None:
        loops = self._control.loops
        while True:
            await asyncio.sleep(self._flush_interval + loops.delay("local-agent"))
            if self._rows:  # nothing to store: an idle server stays idle
                await self._store()

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish briefly, store what they produced."""
        await self._scheduler.stop(wait_seconds=5.0)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if not await self._store() and self._rows:
            self._control.metrics.count("local_results_dropped_total", len(self._rows))
            log.error("%d local results could not be stored before stopping", len(self._rows))
        await self._pool.__aexit__(None, None, None)
