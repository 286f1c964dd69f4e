"""The agent's small HTTP endpoint: /ready, /disconnect and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

MAX_HEADER_LINES = 100

# A handler gets the method and path and returns (status, content type, body).
Handler = Callable[[str, str], tuple[int, str, bytes]]

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


async def _serve_one(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        parts = request.decode("latin-1").split()
        for _ in range(MAX_HEADER_LINES):  # headers are not needed, only skipped, boundedly
            if (await asyncio.wait_for(reader.readline(), 5)) in (b"\r\n", b"\n", b""):
                break
        else:
            parts = []
        if len(parts) < 2:
            status, kind, body = 400, "text/plain", b"bad request\n"
        else:
            status, kind, body = handler(parts[0].upper(), parts[1].split("?", 1)[0])
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, ConnectionError, ValueError):
        pass  # ValueError: a line longer than the reader's 64 KiB limit
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_status_server(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and answer each request with `handler` (HTTP/1.1, one per connection)."""
    return await asyncio.start_server(lambda r, w: _serve_one(handler, r, w), host, port)
