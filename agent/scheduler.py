"""Runs each canary's checks on its schedule; configs change without restarting the rest."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.schedule import Schedule, parse_schedule

log = logging.getLogger("agent.scheduler")

CRON_JITTER_CAP_SECONDS = 30.0

# Called once per check run with the canary id and the check spec.
RunCheck = Callable[[str, Mapping[str, Any]], Coroutine[Any, Any, None]]
# Called with the canary id and the check spec when a run is skipped.
OnSkip = Callable[[str, Mapping[str, Any]], None]


@dataclass
class Lateness:
    """How late runs started against their planned time, for the drift metric."""

    runs: int = 0
    total_seconds: float = 0.0
    worst_seconds: float = 0.0
    recent: list[float] = field(default_factory=list)

    def record(self, seconds: float) -> None:
        self.runs += 1
        self.total_seconds += seconds
        self.worst_seconds = max(self.worst_seconds, seconds)
        self.recent.append(seconds)
        if len(self.recent) > 10_000:
            del self.recent[: len(self.recent) - 5_000]


def _fingerprint(canary: Mapping[str, Any]) -> bytes:
    return orjson.dumps(canary, option=orjson.OPT_SORT_KEYS)


class Scheduler:
    """One task per canary: planned start times, a random offset, checks run concurrently.

    Each canary's first run is offset by a random fraction of its period (spreading load);
    later runs follow the plan, not the finishing time of the previous run, so slow checks
    never make a schedule drift. A check whose previous run (retries included) is still
    running when it is due again is not started a second time: that run is skipped and
    reported to `on_skip`, so slow checks never pile up. `update` starts, restarts and stops
    only the canaries whose spec changed.
    """

    def __init__(
        self,
        run_check: RunCheck,
        rng: random.Random | None = None,
        on_skip: OnSkip | None = None,
    ) -> None:
        self._run_check = run_check
        self._rng = rng or random.Random()
        self._on_skip = on_skip
        self._tasks: dict[str, tuple[bytes, asyncio.Task[None]]] = {}
        self._runs: set[asyncio.Task[None]] = set()
        # The run in progress of each (canary id, check name).
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.skipped = 0
        self.lateness = Lateness()

    @property
    def canaries(self) -> list[str]:
        return sorted(self._tasks)

    def update(self, canaries: Iterable[Mapping[str, Any]]) -> tuple[int, int, int]:
        """Apply a new set of canaries; returns how many were (added, changed, removed)."""
        wanted = {c["id"]: c for c in canaries}
        added = changed = removed = 0
        for canary_id in [c for c in self._tasks if c not in wanted]:
            self._tasks.pop(canary_id)[1].cancel()
            removed += 1
        for canary_id, canary in wanted.items():
            fingerprint = _fingerprint(canary)
            current = self._tasks.get(canary_id)
            if current is not None and current[0] == fingerprint:
                continue
            if current is not None:
                current[1].cancel()
                changed += 1
            else:
                added += 1
            task = asyncio.create_task(self._loop(canary), name=f"canary {canary_id}")
            self._tasks[canary_id] = (fingerprint, task)
        return added, changed, removed

    def clear(self) -> None:
        """Stop every canary (e.g. the agent was disabled); runs in progress finish."""
        self.update([])

    async def stop(self, wait_seconds: float = 10.0) -> None:
        """Stop scheduling and give runs in progress up to `wait_seconds` to finish."""
        self.clear()
        if self._runs:
            await asyncio.wait(set(self._runs), timeout=wait_seconds)

    async def _loop(self, canary: Mapping[str, Any]) -> None:
        schedule = parse_schedule(canary["schedule"])
        if schedule.kind == "never":
            return
        loop = asyncio.get_running_loop()
        period = schedule.period_seconds() or 60.0
        if schedule.kind == "every":
            jitter = 0.0
            target = loop.time() + self._rng.uniform(0, period)
        else:
            # Cron runs keep their wall-clock times, shifted by a small per-canary jitter.
            jitter = self._rng.uniform(0, min(period * 0.1, CRON_JITTER_CAP_SECONDS))
            target = self._next_target(schedule, loop.time(), loop.time(), jitter)
        while True:
            await asyncio.sleep(max(0.0, target - loop.time()))
            self.lateness.record(max(0.0, loop.time() - target))
            for check in canary["checks"]:
                self._start(canary["id"], check)
            target = self._next_target(schedule, target, loop.time(), jitter)

    def _start(self, canary_id: str, check: Mapping[str, Any]) -> None:
        key = (canary_id, str(check.get("name")))
        previous = self._running.get(key)
        if previous is not None and not previous.done():
            self.skipped += 1
            if self._on_skip is not None:
                self._on_skip(canary_id, check)
            return
        run = asyncio.create_task(self._run_check(canary_id, check))
        self._runs.add(run)
        self._running[key] = run

        def finished(task: asyncio.Task[None]) -> None:
            self._runs.discard(task)
            if self._running.get(key) is task:
                del self._running[key]

        run.add_done_callback(finished)

    @staticmethod
    def _next_target(schedule: Schedule, previous: float, now: float, jitter: float) -> float:
        if schedule.kind == "every":
            period = schedule.period_seconds() or 60.0
            following = previous + period
            if following < now:  # fell behind (e.g. the machine was suspended): skip, don't burst
                following += ((now - following) // period + 1) * period
            return following
        wall = datetime.now(UTC)
        following_wall = schedule.next_after(wall)
        assert following_wall is not None
        return now + (following_wall - wall).total_seconds() + jitter
