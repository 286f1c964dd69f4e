"""Silent agents: announce `agent_silent` when an agent stops pulling and pushing, and
`agent_recovered` when it is heard from again; keep each agent's last pull and push in the
state file so a restart neither forgets nor re-announces them (core/agent_silence.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.agent_silence import changes, last_heard, silent_agents
from reconciler.server.supervise import Supervisor
from reconciler.store.agent_activity import Activity, load_activity, save_activity
from reconciler.store.handle import StateHandle


class AgentSilence:
    """Watches the enabled agents of the served revision.

    Args:
        state: the server's hold on the state file.
        clock: the current time.
        activity: each agent's last pull and last push as the control plane saw them.
        restore: hands the stored activity back to the control plane at start.
        watched: the enabled agents of the served revision, with their regions.
        announce: where events go (logs and notifications).
        after: silence longer than this is announced.
        interval: seconds between two looks.
        loops: where a failed look is reported.
    """

    def __init__(
        self,
        state: StateHandle,
        clock: Callable[[], datetime],
        activity: Callable[[], Mapping[str, Activity]],
        restore: Callable[[Mapping[str, Activity]], None],
        watched: Callable[[], Mapping[str, str]],
        announce: Callable[[dict[str, Any]], None],
        after: timedelta,
        interval: float,
        loops: Supervisor | None = None,
    ) -> None:
        self._state = state
        self._clock = clock
        self._activity = activity
        self._restore = restore
        self._watched = watched
        self._announce = announce
        self.after = after
        self.interval = interval
        self._loops = loops
        self.silent: dict[str, datetime] = {}  # agent -> last heard from
        self._since = clock()
        self._saved: dict[str, Activity] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        stored = await self._state.read(load_activity)
        self._saved = dict(stored)
        self._restore(stored)
        self._task = asyncio.create_task(self._loop(), name="agent-silence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # best effort on the way out
            await self._save()

    async def look(self) -> list[dict[str, Any]]:
        """Compare now with the last look; announce and return the changes."""
        now = self._clock()
        activity = self._activity()
        heard = {agent: last_heard(*seen) for agent, seen in activity.items()}
        regions = self._watched()
        silent = silent_agents(heard, regions, now, self.after, self._since)
        events = changes(self.silent, silent, heard, regions, now)
        self.silent = silent
        await self._save()
        for event in events:
            self._announce(event)
        return events

    async def _save(self) -> None:
        changed = {
            agent: seen
            for agent, seen in self._activity().items()
            if self._saved.get(agent) != seen
        }
        if changed:
            await self._state.write(lambda c: save_activity(c, changed))
            self._saved.update(changed)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.look()
            except Exception as error:  # noqa: BLE001 - reported; the next look tries again
                if self._loops is None:
                    raise
                await asyncio.sleep(self._loops.failed("agent-silence", error))
            else:
                if self._loops is not None:
                    self._loops.succeeded("agent-silence")
