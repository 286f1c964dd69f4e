"""The FastAPI application of `reconcile serve`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

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
    site_api,
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

    for router in ROUTERS:
        app.include_router(router)

    def targets_route() -> BaseRoute | None:
        return next((r for r in app.routes if getattr(r, "path", None) == TARGETS_PATH), None)

    # Added last is outermost: metrics see every request, the fast path included.
    app.add_middleware(TargetsFastPath, control=control, route=targets_route)
    app.add_middleware(RequestMetrics, metrics=control.metrics)
    return app
