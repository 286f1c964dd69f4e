"""Small HTTP servers on 127.0.0.1 for tests: a handler class in, a running server out."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str = "application/json",
) -> None:
    """Answer a request with `status` and `body` (its length and type in the headers)."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server that takes a client hanging up as nothing to report: the
    tests' clients time out and close on purpose (the default prints a traceback, on the
    suite's output, after the test that caused it has ended)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def start(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded HTTP server on a free port of 127.0.0.1, serving from a daemon thread."""
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url(server: ThreadingHTTPServer, path: str = "") -> str:
    """`http://127.0.0.1:PORT` of a started server, then `path`."""
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def stop(server: ThreadingHTTPServer) -> None:
    """Stop serving and release the port."""
    server.shutdown()
    server.server_close()


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """`start` a server for the block, `stop` it after."""
    server = start(handler)
    try:
        yield server
    finally:
        stop(server)
