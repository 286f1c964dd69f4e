"""The canary admin API: deployment status, manual actions, and metrics pushed by gateways."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler.core.refusal import RequestRefused
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.server.http.common import (
    control_of,
    controllers_of,
    json_response,
    read_json,
    require_admin,
    require_read,
)
from reconciler.server.http.docs import ERROR_SCHEMA, errors, json_body, model_schema

router = APIRouter(tags=["canary"])

ACTIONS = ("start", "pause", "resume", "promote", "rollback")

# An action whose weights the gateway refused (docs/canary-deployments.md): not done, or for a
# rollback, recorded but not in effect yet. Either way the traffic did not move.
GATEWAY_REFUSED: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "The gateway refused the action's weights (the error says why): the "
        "run is unchanged, except after `rollback`, which stands and is applied as soon as "
        "the gateway takes its weights.",
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }
}


class PushedGroup(BaseModel):
    """One traffic group's counts since the gateway's last push."""

    model_config = ConfigDict(extra="forbid")
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    p99_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _errors_within_requests(self) -> PushedGroup:
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")
        return self


class PushedMetrics(BaseModel):
    """`POST /api/routes/{route}/metrics`: per-group counts observed by a gateway."""

    model_config = ConfigDict(extra="forbid")
    groups: dict[str, PushedGroup]


def _controller(request: Request) -> DeploymentController:
    return controllers_of(request).deployments


@router.get(
    "/canary",
    summary="Every route's canary deployment with its evaluations",
    responses=errors(401),
)
async def status(request: Request) -> Response:
    require_read(request)
    controller = _controller(request)
    runs = await controller.snapshot()
    return json_response({"canaries": runs})


@router.post(
    "/canary/{route}/{action}",
    summary="start, pause, resume, promote or rollback",
    responses={**errors(401, 404, 409), **GATEWAY_REFUSED},
)
async def act(request: Request, route: str, action: str) -> Response:
    require_admin(request)
    if action not in ACTIONS:
        raise RequestRefused(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    controller = _controller(request)
    return json_response(await controller.act(route, action))


@router.post(
    "/api/routes/{route}/metrics",
    summary="Per-group metrics pushed by a gateway",
    responses=errors(401, 404, 408, 413, 415, 422),
    openapi_extra=json_body(model_schema(PushedMetrics)),
)
async def push(request: Request, route: str) -> Response:
    require_admin(request)
    controller = _controller(request)
    expected = '{"groups": {name: {requests, errors, p99_ms}}}'
    try:
        document = PushedMetrics.model_validate(await read_json(request, expected))
    except ValidationError as error:
        raise RequestRefused(422, f"expected {expected}: {error}") from None
    known = {r.name for r in control_of(request).resources_of("Route")}
    if route not in known:
        raise RequestRefused(404, f"route {route} is not in the configuration")
    groups = {g: (m.requests, m.errors, m.p99_ms) for g, m in document.groups.items()}
    await controller.push(route, groups)
    return json_response({"stored": len(groups)}, 202)
