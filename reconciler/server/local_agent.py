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
            await self._flush()

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            await self._control.ingest(LOCAL, rows, None)

    async def _flush_loop(self) -> None:
        loops = self._control.loops
        while True:
            await asyncio.sleep(self._flush_interval + loops.delay("local-agent"))
            if not self._rows:
                continue  # nothing to store: an idle server stays idle
            try:
                await self._flush()
            except Exception as error:  # noqa: BLE001 - a failed insert must not stop local checks
                loops.failed("local-agent", error, "storing local results")
            else:
                loops.succeeded("local-agent")

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish briefly, store what they produced."""
        await self._scheduler.stop(wait_seconds=5.0)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()
        await self._pool.__aexit__(None, None, None)
