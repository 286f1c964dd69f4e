"""Waiting for a condition, never for a time: the one poll loop every test uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_SECONDS = 0.02


def holds_within(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a condition until it holds; fail after `timeout` seconds."""
    if not holds_within(condition, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """`wait_for` on the event loop: the loop keeps running while the condition is polled."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)
