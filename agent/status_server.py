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
        method = parts[0].upper() if len(parts) >= 2 else ""
        if not method:
            status, kind, body = 400, "text/plain", b"bad request\n"
        else:
            status, kind, body = _answer(handler, method, parts[1].split("?", 1)[0])
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        # HEAD: the headers GET would get (its Content-Length too), without the body.
        writer.write(head.encode() + (b"" if method == "HEAD" else body))
        await writer.drain()
    except (TimeoutError, ConnectionError, ValueError):
        pass  # ValueError: a line longer than the reader's 64 KiB limit
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _answer(handler: Handler, method: str, path: str) -> tuple[int, str, bytes]:
    """The handler's answer; a HEAD is answered as a GET (RFC 9110: the same headers), so
    it never acts (`HEAD /disconnect` is refused like `GET /disconnect`)."""
    return handler("GET" if method == "HEAD" else method, path)


async def start_status_server(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and answer each request with `handler` (HTTP/1.1, one per connection)."""
    return await asyncio.start_server(lambda r, w: _serve_one(handler, r, w), host, port)
