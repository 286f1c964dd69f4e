"""The FastAPI application of `reconcile serve`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciler import __version__
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http import (
    agent_api,
    canary_api,
    incidents_api,
    operator_api,
    ops_api,
    read_api,
    screenshots_api,
    site_api,
)
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


def create_app(
    control: ControlPlane, trigger: Callable[[str], None], controllers: Controllers
) -> FastAPI:
    """The app, wired to a control plane, its controllers and the reconcile trigger."""
    app = FastAPI(
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

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        control.metrics.observe(
            "http_request_duration_seconds",
            time.perf_counter() - started,
            route=path,
            status=f"{response.status_code // 100}xx",
        )
        return response

    for router in ROUTERS:
        app.include_router(router)
    return app
