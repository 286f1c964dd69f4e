"""Plain ASGI layers around the app: request metrics, and the agents' config pull served
without FastAPI's per-request work (routing through every route, dependency solving).

Starlette's `BaseHTTPMiddleware` runs each request through a task group and memory streams;
at thousands of pulls a second that was half the server's CPU, so these wrap `send` instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.metrics import Metrics
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.agent_api import TARGETS_PATH, answer_targets
from reconciler.server.http.common import problem

__all__ = ["RequestMetrics", "TargetsFastPath"]

DURATION_METRIC = "http_request_duration_seconds"


class RequestMetrics:
    """Observes every HTTP request's duration by route template and status class.

    The duration runs from the request's arrival to the last byte of its answer handed to
    the server; a request whose handler raised counts as 5xx (the error middleware outside
    answers 500).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            # The router writes the matched route into this same scope dict.
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(
                DURATION_METRIC,
                time.perf_counter() - started,
                route=path,
                status=f"{status // 100}xx",
            )


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (names arrive lower-cased), decoded as Starlette does."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _query(scope: Scope, name: str) -> str | None:
    """A query parameter's last value, as `request.query_params.get` reads it."""
    raw: bytes = scope["query_string"]
    if not raw:
        return None
    found = None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key == name:
            found = value
    return found


class TargetsFastPath:
    """Answers `GET /api/agent/targets` directly; every other request goes to the app.

    The FastAPI route of the same path stays registered, so `/openapi.json` documents it,
    and both answer through `agent_api.answer_targets`: the same ETags, long poll and
    refusals.
    """

    def __init__(self, app: ASGIApp, control: ControlPlane, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.control = control
        # The documented route, for the metrics label: `route` as if the router had matched.
        self.route = next((r for r in routes if getattr(r, "path", None) == TARGETS_PATH), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TARGETS_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            response = await answer_targets(
                self.control,
                _header(scope, b"authorization"),
                _header(scope, b"if-none-match"),
                _query(scope, "wait"),
            )
        except RequestRefused as refused:
            response = await self._refusal(scope, receive, refused)
        await response(scope, receive, send)

    async def _refusal(self, scope: Scope, receive: Receive, refused: RequestRefused) -> Response:
        """The answer of the app's one handler of refusals, as every other route gives it."""
        app = scope.get("app")
        handlers = getattr(app, "exception_handlers", {})
        handler = handlers.get(RequestRefused)
        if handler is None:
            return problem(refused.status, refused.message, **refused.details)
        answer: Response = await handler(Request(scope, receive), refused)
        return answer
