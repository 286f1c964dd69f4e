"""A trickle of requests through the gateway, so canary analysis has traffic to judge."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Sequence

import httpx

REQUESTS_PER_SECOND = 15  # per route: a 10% canary sees enough requests within seconds


def wait_routed(
    gateway_url: str, paths: Sequence[str], stop: threading.Event, timeout: float = 20.0
) -> bool:
    """Wait until the gateway routes every path (answers other than 404); whether it does."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=gateway_url, timeout=5, trust_env=False) as client:
        pending = list(paths)
        while pending and time.monotonic() < deadline and not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                pending = [p for p in pending if client.get(p).status_code == 404]
            if pending:
                stop.wait(0.2)
    return not pending


class Traffic:
    """Sends GET requests to each path through the gateway from one thread until `stop()`."""

    def __init__(self, gateway_url: str, paths: Sequence[str], rate: float = REQUESTS_PER_SECOND):
        self.gateway_url = gateway_url
        self.paths = list(paths)
        self.rate = rate
        self.seen: dict[str, Counter[str]] = {path: Counter() for path in self.paths}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-traffic", daemon=True)

    def start(self) -> None:
        """Start sending."""
        self._thread.start()

    def _loop(self) -> None:
        pause = 1.0 / self.rate
        with httpx.Client(base_url=self.gateway_url, timeout=5, trust_env=False) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                for path in self.paths:
                    try:
                        response = client.get(path)
                        key = f"{response.status_code} {response.text.strip()[:60]}"
                    except httpx.HTTPError as error:
                        key = f"error {type(error).__name__}"
                    with self._lock:
                        self.seen[path][key] += 1
                self._stop.wait(max(0.0, pause - (time.monotonic() - started)))

    def snapshot(self) -> dict[str, Counter[str]]:
        """Responses so far per path, as `STATUS BODY` counts."""
        with self._lock:
            return {path: Counter(seen) for path, seen in self.seen.items()}

    def stop(self) -> None:
        """Stop sending and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
