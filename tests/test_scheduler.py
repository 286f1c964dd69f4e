"""The scheduler runs checks on their schedules and applies config changes in place."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

from agent.scheduler import Scheduler


def canary(canary_id: str, every: str = "50ms", checks: tuple[str, ...] = ("a",)) -> dict[str, Any]:
    return {
        "id": canary_id,
        "schedule": f"@every {every}",
        "checks": [{"name": name, "type": "tcp", "timeout_ms": 10} for name in checks],
    }


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def test_runs_every_check_and_applies_updates_in_place() -> None:
    runs: Counter[tuple[str, str]] = Counter()

    async def run(canary_id: str, check: Mapping[str, Any]) -> None:
        runs[(canary_id, check["name"])] += 1

    async def scenario() -> None:
        scheduler = Scheduler(run, random.Random(1))
        assert scheduler.update([canary("x"), canary("y", checks=("a", "b"))]) == (2, 0, 0)
        await _until(lambda: min(runs[("x", "a")], runs[("y", "a")], runs[("y", "b")]) >= 3)

        assert scheduler.update([canary("y", checks=("a", "b")), canary("z")]) == (1, 0, 1)
        stopped_at = runs[("x", "a")]
        before_z = runs[("z", "a")]
        await _until(lambda: runs[("z", "a")] >= before_z + 4)
        assert runs[("x", "a")] <= stopped_at + 1, "a removed canary stops running"

        assert scheduler.update([canary("y", checks=("b",)), canary("z")]) == (0, 1, 0)
        a_then = runs[("y", "a")]
        b_then = runs[("y", "b")]
        await _until(lambda: runs[("y", "b")] >= b_then + 4)
        assert runs[("y", "a")] <= a_then + 1, "a removed check stops running"
        await scheduler.stop()
        assert scheduler.canaries == []

    asyncio.run(scenario())


def test_a_slow_check_does_not_delay_the_schedule_and_its_overdue_runs_are_skipped() -> None:
    started: list[float] = []
    skipped: list[str] = []
    release = asyncio.Event()

    async def run(canary_id: str, check: Mapping[str, Any]) -> None:
        started.append(asyncio.get_running_loop().time())
        await release.wait()  # the run hangs until released

    async def scenario() -> None:
        scheduler = Scheduler(run, random.Random(2), lambda c, check: skipped.append(c))
        scheduler.update([canary("slow", every="40ms")])
        # The ticks keep coming on time while the first run hangs; each is skipped, not
        # stacked behind it (retries must never pile runs up).
        await _until(lambda: len(skipped) >= 4)
        assert len(started) == 1 and scheduler.skipped == len(skipped)
        release.set()
        # Once the run ended, the next tick starts the check again.
        await _until(lambda: len(started) >= 2)
        await scheduler.stop()
        assert scheduler.lateness.runs >= 5

    asyncio.run(scenario())


def test_a_check_still_retrying_blocks_neither_its_canarys_other_checks_nor_its_schedule() -> None:
    runs: Counter[str] = Counter()
    release = asyncio.Event()

    async def run(canary_id: str, check: Mapping[str, Any]) -> None:
        runs[check["name"]] += 1
        if check["name"] == "retrying":
            await release.wait()  # as a run waiting between its attempts

    async def scenario() -> None:
        scheduler = Scheduler(run, random.Random(3))
        scheduler.update([canary("c", every="30ms", checks=("retrying", "quick"))])
        await _until(lambda: runs["quick"] >= 4)
        assert runs["retrying"] == 1 and scheduler.skipped >= 2
        release.set()
        await scheduler.stop()

    asyncio.run(scenario())


class _NoOffset(random.Random):
    """First runs at once: a canary that is scheduled at all runs within the test."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_never_schedules_nothing() -> None:
    runs: Counter[str] = Counter()
    tasks: list[asyncio.Task[Any]] = []

    async def run(canary_id: str, check: Mapping[str, Any]) -> None:
        runs[canary_id] += 1

    def keep(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        tasks.append(task)
        return task

    async def scenario() -> list[BaseException]:
        # Every task is kept: a canary task that crashed is as wrong as one that ran, and
        # stopping the scheduler would cancel it, which silences its exception.
        asyncio.get_running_loop().set_task_factory(keep)
        scheduler = Scheduler(run, _NoOffset())
        never = {"id": "never", "schedule": "@never", "checks": [{"name": "a"}]}
        scheduler.update([never, canary("control", every="10ms")])
        # The control canary's runs are the clock: by its third, a scheduled @never would have
        # run (first runs have no offset here).
        await _until(lambda: runs["control"] >= 3)
        crashed = [
            error
            for task in tasks
            if task.done() and not task.cancelled() and (error := task.exception()) is not None
        ]
        await scheduler.stop()
        return crashed

    crashed = asyncio.run(scenario())
    assert runs["never"] == 0, "a @never canary ran"
    assert crashed == [], f"a canary task failed: {crashed!r}"
