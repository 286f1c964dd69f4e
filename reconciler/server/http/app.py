"""The FastAPI application of `reconcile serve`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler import __version__
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http import (
    agent_api,
    canary_api,
    heartbeat_api,
    incidents_api,
    maintenance_api,
    notifications_api,
    operator_api,
    ops_api,
    read_api,
    screenshots_api,
    site_api,
    state_api,
)
from reconciler.server.http.agent_api import TARGETS_PATH
from reconciler.server.http.asgi import RequestMetrics, TargetsFastPath
from reconciler.server.http.common import answer_http_error, answer_refusal
from reconciler.server.http.parts import Controllers
from reconciler.server.http.webhook import ReplayGuard
from reconciler.server.operator_edits import OperatorEdits

__all__ = ["ROUTERS", "Controllers", "create_app"]

# Every API the app serves, one router per module.
ROUTERS = tuple(
    module.router
    for module in (agent_api, operator_api, ops_api, read_api, incidents_api, canary_api, site_api)
)
ROUTERS += (screenshots_api.router,)  # browser checks' screenshots, apart from results
ROUTERS += (maintenance_api.router,)  # maintenance windows: read, operator edits
ROUTERS += (notifications_api.router,)
ROUTERS += (heartbeat_api.router,)  # heartbeat pings and their tokens
ROUTERS += (state_api.router,)  # backups of the state file


class _App(FastAPI):
    """FastAPI with the request metrics and the config pull's fast path outermost.

    A pull skips FastAPI's own per-request work (its telemetry check, error page, body
    limit, router); the metrics still see a request that failed elsewhere, as the 500 the
    error layer answered.
    """

    def build_middleware_stack(self) -> ASGIApp:
        control: ControlPlane = self.state.control
        inner = super().build_middleware_stack()
        pulls = TargetsFastPath(inner, control, agent_api.router.routes)
        return RequestMetrics(pulls, control.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TARGETS_PATH:
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            scope["app"] = self
            await self.middleware_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    control: ControlPlane, trigger: Callable[[str], None], controllers: Controllers
) -> FastAPI:
    """The app, wired to a control plane, its controllers and the reconcile trigger."""
    app = _App(
        title="canary-reconciler",
        version=__version__,
        description="Control plane of canary-reconciler: agent config and results, "
        "operator API, read API, operations.",
    )
    app.state.control = control
    app.state.trigger = trigger
    app.state.controllers = controllers
    app.state.operator_edits = OperatorEdits(control)
    app.state.webhook_replays = ReplayGuard(
        timedelta(seconds=control.settings.webhook_replay_window)
    )
    app.add_exception_handler(RequestRefused, answer_refusal)
    # Unknown paths and methods answer in the same shape as every other refusal.
    app.add_exception_handler(StarletteHTTPException, answer_http_error)

    for router in ROUTERS:
        app.include_router(router)
    return app
