"""Small HTTP services on 127.0.0.1 that the demo's canaries and routes point at.

- `healthy_pages`: every page the sample canaries check (the shop's home page, the API health
  endpoint, the login page and OIDC discovery, the payments authorisation, the status page),
  answering as their checks expect.
- `flaky_search`: the search API; a share of requests (30% by default) fails with 503, so the
  demo shows failing runs and uptime below 100% without anything being broken by hand.
- `RouteBackend`: one per backend of a route. It answers with its name after 20-30 ms (so the
  canary analysis compares groups with similar latency, not scheduler noise); `POST /break`
  makes it answer 500 until `POST /fix`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import orjson

# (status, content type, body)
Answer = tuple[int, str, bytes]
# Called with the method, the path (no query) and the request headers (names lower-cased).
Responder = Callable[[str, str, Mapping[str, str]], Answer]

JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
FLAKY_FAILURE_RATE = 0.3


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up early is not worth a traceback in the demo's output


class HttpService:
    """A threaded HTTP/1.1 server on 127.0.0.1 (keep-alive) answering through a responder."""

    def __init__(self, name: str, respond: Responder) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes: without this, Nagle's algorithm and
            # the client's delayed ACK add 40 ms to every keep-alive response.
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, content_type, body = respond(
                    self.command, urlsplit(self.path).path, headers
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Demo-Backend", name)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.name = name
        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"demo-{name}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _json(document: object, status: int = 200) -> Answer:
    return status, JSON, orjson.dumps(document)


SHOP_PAGE = (
    b"<!doctype html><html><head><title>Demo shop</title></head><body>"
    b"<h1>Trail running shoes</h1><p>EUR 89</p><button>Add to cart</button></body></html>\n"
)
LOGIN_PAGE = (
    b"<!doctype html><html><head><title>Sign in</title></head><body>"
    b"<form method=post><input name=user><input name=password type=password>"
    b"<button>Sign in</button></form></body></html>\n"
)
_PAGES: dict[str, Answer] = {
    "/": (200, HTML, SHOP_PAGE),
    "/health": _json({"status": "healthy", "service": "demo-api"}),
    "/login": (200, HTML, LOGIN_PAGE),
    "/.well-known/openid-configuration": _json(
        {
            "issuer": "https://id.example.com",
            "authorization_endpoint": "https://id.example.com/authorize",
            "token_endpoint": "https://id.example.com/token",
        }
    ),
    "/api/v2/status.json": _json(
        {"status": {"indicator": "none", "description": "All Systems Operational"}}
    ),
}


def healthy_pages(method: str, path: str, headers: Mapping[str, str]) -> Answer:
    """The healthy service: the pages of every sample HTTP check but search."""
    if method == "POST" and path == "/v1/authorize":
        if not headers.get("authorization"):
            return _json({"error": "missing Authorization"}, 401)
        return _json({"status": "authorized", "dry_run": True}, 202)
    if method == "GET" and path in _PAGES:
        return _PAGES[path]
    return 404, TEXT, f"no demo page at {path}\n".encode()


def flaky_search(
    failure_rate: float = FLAKY_FAILURE_RATE, rng: random.Random | None = None
) -> Responder:
    """The flaky service: the search API, failing `failure_rate` of requests with 503."""
    chance = rng or random.Random()

    def respond(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        if path != "/api/search":
            return 404, TEXT, f"no demo page at {path}\n".encode()
        if chance.random() < failure_rate:
            overloaded = "search cluster overloaded (the demo's flaky service)"
            return _json({"error": overloaded, "hits": [], "total": 0}, 503)
        return _json({"hits": [{"name": "Trail running shoe", "price": 89}], "total": 1})

    return respond


class RouteBackend:
    """One backend of a route: answers its name; `POST /break` and `POST /fix` toggle 500s."""

    def __init__(self, name: str, latency: tuple[float, float] = (0.02, 0.03)) -> None:
        self.name = name
        self.broken = threading.Event()
        self._latency = latency
        self._rng = random.Random()
        self.service = HttpService(name, self._respond)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return self.service.url

    def _respond(self, method: str, path: str, headers: Mapping[str, str]) -> Answer:
        if method == "POST" and path == "/break":
            self.broken.set()
            return 200, TEXT, f"{self.name} now answers 500 (POST /fix heals it)\n".encode()
        if method == "POST" and path == "/fix":
            self.broken.clear()
            return 200, TEXT, f"{self.name} answers 200 again\n".encode()
        time.sleep(self._rng.uniform(*self._latency))
        if self.broken.is_set():
            return 500, TEXT, f"{self.name} is broken (POST /fix heals it)\n".encode()
        return 200, TEXT, f"{self.name}\n".encode()

    def close(self) -> None:
        """Stop serving."""
        self.service.close()
