"""Timing phases of an HTTP exchange, from httpcore's trace events."""

from __future__ import annotations

import time
from typing import Any

_PHASES = {
    "connection.connect_tcp": "connect_ms",
    "connection.start_tls": "tls_ms",
}
_HEADERS_DONE = ".receive_response_headers.complete"


class PhaseRecorder:
    """Collects connect, TLS and first-byte times; pass `trace` as the `trace` extension.

    Over redirects, connect and TLS times add up and the first byte is the final response's.
    A phase that did not happen (a reused connection, plain HTTP) is left out.
    """

    def __init__(self) -> None:
        """Start the clock: phases are measured from now."""
        self.start = time.perf_counter()
        self._open: dict[str, float] = {}
        self._spent: dict[str, float] = {}
        self._first_byte: float | None = None

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        """The httpcore trace callback.

        Args:
            event: An event name such as `connection.connect_tcp.started`.
            info: The event's details (unused).
        """
        now = time.perf_counter()
        name, _, stage = event.rpartition(".")
        phase = _PHASES.get(name)
        if phase is not None and stage == "started":
            self._open[phase] = now
        elif phase is not None and stage == "complete" and phase in self._open:
            spent = (now - self._open.pop(phase)) * 1000
            self._spent[phase] = self._spent.get(phase, 0.0) + spent
        elif event.endswith(_HEADERS_DONE):
            self._first_byte = (now - self.start) * 1000

    def elapsed_ms(self) -> float:
        """Milliseconds since the recorder started."""
        return (time.perf_counter() - self.start) * 1000

    def phases(self, total_ms: float) -> dict[str, float]:
        """The phases recorded so far, with `total_ms` as the total."""
        result = {phase: round(ms, 3) for phase, ms in self._spent.items()}
        if self._first_byte is not None:
            result["first_byte_ms"] = round(self._first_byte, 3)
        result["total_ms"] = round(total_ms, 3)
        return result
