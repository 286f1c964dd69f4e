"""The HTTP listener's read limits: header and body deadlines, a header size cap, per connection.

uvicorn bounds the idle time between two requests (`timeout_keep_alive`) and the number of
connections (`limit_concurrency`), but not the time a client takes to send its request line
and headers, nor their size, nor how long it may trickle a body the app has already answered.
A client sending one byte a second would hold a socket (and a growing buffer) forever. This
protocol, uvicorn's httptools one with three timers and a byte count, closes such connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reconciler.server.settings import ServeSettings


@dataclass(frozen=True)
class ReadLimits:
    """How long and how much a client may take to send one request."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    # Told the reason of every request cut off, so none goes uncounted.
    on_cut: Callable[[str], None] = field(default=lambda reason: None, compare=False)

    @classmethod
    def of(cls, settings: ServeSettings, on_cut: Callable[[str], None]) -> ReadLimits:
        """The limits `reconcile serve` is configured with, reporting cuts to `on_cut`.

        `on_cut` is called with `header_timeout`, `header_too_large`, `body_timeout`,
        `connection_limit` or `stopping`.
        """
        return cls(
            settings.header_timeout, settings.body_timeout, settings.max_header_bytes, on_cut
        )


# The counter of requests cut off here, by reason; `read_body`'s own 408 counts in it too.
CUT_METRIC = "http_requests_cut_total"

# On stop, how much longer a request body still arriving may take before the request is cut
# off with 503: a body nearly sent gets through, a trickled one does not hold up the stop.
STOP_UPLOAD_GRACE = 1.0
STOPPING_MESSAGE = (
    "the server is stopping and the request body had not all arrived; send the request again"
)

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response in the API's error shape that closes the connection."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} ".encode()
        + _REASONS[status]
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
    )
    return head + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that refuses slow or oversized request heads and bodies.

    - Headers: from the connection's first moment (or the first byte of a later request on a
      kept-alive connection) the request line and headers must arrive within `header_timeout`
      and be at most `max_header_bytes`; else 408 or 431, and the connection is closed.
    - Body: from the end of the headers the whole body must arrive within `body_timeout`.
      A route reading the body answers 408 itself (`read_body`); when the app has already
      answered without reading it, the connection is closed instead of draining it forever.
    - On stop (`shutdown`), a body still arriving gets `STOP_UPLOAD_GRACE` more seconds (at
      most its own deadline); then the request gets 503 and its connection is closed, so a
      client trickling a body cannot hold up the server's exit for the body timeout.
    - Each cut, and each request uvicorn refuses (503) over its connection cap, is reported
      to `limits.on_cut` with its reason.
    """

    limits: ClassVar[ReadLimits] = ReadLimits(10.0, 30.0, 64 * 1024)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0

    # -- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping: a request whose body is still arriving is cut off after
        `STOP_UPLOAD_GRACE` seconds; any other connection is left to uvicorn (closed when idle,
        else after its answer)."""
        cycle = self.cycle
        if self._body_timer is None or cycle is None or cycle.response_complete:
            super().shutdown()
            return
        cycle.keep_alive = False  # whatever happens, no further request on this connection
        remaining = self._body_timer.when() - self.loop.time()
        self._body_timer.cancel()
        grace = max(0.0, min(remaining, STOP_UPLOAD_GRACE))
        self._body_timer = self.loop.call_later(grace, self._stop_upload)

    def data_received(self, data: bytes) -> None:
        # Only chunks that arrive wholly inside a request head are counted, so a chunk that
        # ends one body and starts the next head is never mistaken for a long head; a head
        # therefore buffers at most one socket read beyond the limit before it is refused.
        counting = self._in_head
        super().data_received(data)
        if counting and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    "header_too_large",
                    431,
                    f"the request line and headers are larger than "
                    f"{self.limits.max_header_bytes} bytes (set by RECONCILER_MAX_HEADER_BYTES)",
                )

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is None:
            self._arm_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)
        cap = self.limit_concurrency
        if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
            self.limits.on_cut("connection_limit")  # uvicorn answers 503 below
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timers ---------------------------------------------------------------------------

    def _arm_head(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        self._refuse(
            "header_timeout",
            408,
            f"the request line and headers did not arrive within {self.limits.header_timeout:g} "
            "s (set by RECONCILER_HEADER_TIMEOUT)",
        )

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._cancel_timers()
            self.limits.on_cut("body_timeout")
            self.transport.close()
            return
        # The app is still at work: `read_body` answers 408 if it is the one waiting; either
        # way, the connection is not reused for another request.
        cycle.keep_alive = False

    def _stop_upload(self) -> None:
        """The server is stopping and this request's body is still arriving: 503, closed.

        The route waiting for the body is told at once that the client went away, so it ends
        without acting on a body it never had (a results batch is not accepted: the agent
        sends it again), and anything it still answers is dropped, not written after the 503.
        """
        self._cancel_timers()
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        self.limits.on_cut("stopping")
        if not cycle.response_started:
            self.transport.write(refusal(503, STOPPING_MESSAGE))
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _refuse(self, reason: str, status: int, message: str) -> None:
        """Answer `status` when no response is under way on this connection, then close it."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        self.limits.on_cut(reason)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(refusal(status, message))
        self.transport.close()


def guarded_protocol(limits: ReadLimits) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"limits": limits})
