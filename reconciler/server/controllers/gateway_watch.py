"""The gateway watch: the nginx the server runs is started again when it is gone.

A master killed outright (`kill -9`, the OOM killer) or crashed leaves the routes without a
data plane that follows the weights: its orphaned workers go on serving the old config, or
nothing serves at all, and no weight change could be applied. Every `interval` seconds the
watch looks for the master (a read of the pid file and /proc) and, when it is gone, starts
nginx again with every route's config as applied (`NginxGateway.revive`): logged at level
`warning` and counted in `reconciler_gateway_restarts_total`. A start that fails is a
failure of the `gateway` loop (logged, `/api/v1/status`), tried again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.metrics import Metrics
from reconciler.gateway.base import Gateway, GatewayError
from reconciler.server.supervise import Supervisor

log = logging.getLogger("reconciler.canary")

LOOP = "gateway"
WATCH_SECONDS = 2.0
HELP = "Times the server started its gateway's nginx again after finding it gone."


class GatewayWatch:
    """Looks for the gateway's process every `interval` seconds and starts it again if gone.

    Args:
        gateway: the data plane the server started.
        metrics: where `gateway_restarts_total` is counted.
        interval: seconds between two looks.
        loops: where a failed start is reported (None: logged only).
    """

    def __init__(
        self,
        gateway: Gateway,
        metrics: Metrics,
        interval: float = WATCH_SECONDS,
        loops: Supervisor | None = None,
    ) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self.interval = interval
        self._loops = loops
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        metrics.help.setdefault("gateway_restarts_total", HELP)
        metrics.count("gateway_restarts_total", 0)
        if loops is not None:
            loops.watch(LOOP)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gateway-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def look(self) -> int | None:
        """Start the gateway again if it is gone; its new process id, or None.

        Raises:
            GatewayError: it did not start again.
        """
        pid = await asyncio.to_thread(self._gateway.revive)
        if pid is not None:
            self.restarts += 1
            self._metrics.count("gateway_restarts_total")
            log.warning(
                "the gateway's nginx was not running (killed or crashed); started it again "
                "(pid %d) with every route's config as applied",
                pid,
            )
        return pid

    async def _loop(self) -> None:
        while True:
            try:
                await self.look()
            except GatewayError as error:
                if self._loops is None:
                    log.error("the gateway's nginx did not start again: %s", error)
                    wait = self.interval
                else:
                    wait = max(self.interval, self._loops.failed(LOOP, error))
            else:
                if self._loops is not None:
                    self._loops.succeeded(LOOP)
                wait = self.interval
            await asyncio.sleep(wait)
