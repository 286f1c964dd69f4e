"""Maintenance windows: listed on the read and operator APIs; ad-hoc ones opened and closed
by the operator, each a commit to the config repository."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from reconciler.core import maintenance_edits
from reconciler.core.maintenance import active, upcoming
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.common import (
    control_of,
    documented_query,
    json_response,
    read_model,
    require_admin,
    require_read,
)
from reconciler.server.http.docs import errors, json_body, model_schema, query
from reconciler.server.operator_edits import Committed, OperatorEdits
from schemas.base import Slug
from schemas.durations import parse_duration
from schemas.maintenance import Instant
from schemas.selectors import CanarySelector

router = APIRouter()

DEFAULT_HORIZON_DAYS = 7
MAX_HORIZON_DAYS = 366
_HORIZON = (
    "days",
    {"type": "integer", "minimum": 1, "maximum": MAX_HORIZON_DAYS},
    f"How far ahead upcoming windows are listed, in days ({DEFAULT_HORIZON_DAYS}).",
)


def listing(control: ControlPlane, horizon: timedelta) -> dict[str, Any]:
    """The windows open now, those starting within `horizon`, and every configured window."""
    now = control.clock()
    windows = control.maintenance.windows
    configured = [
        {"name": r.name, "source": r.source, **{k: v for k, v in r.spec.items()}}
        for r in control.resources_of("Maintenance")
    ]
    return {
        "at": maintenance_edits.instant(now),
        "active": [o.document() for o in active(windows, now)],
        "upcoming": [o.document() for o in upcoming(windows, now, horizon)],
        "windows": configured,
    }


def _horizon(request: Request) -> timedelta:
    text = request.query_params.get("days")
    if not text:
        return timedelta(days=DEFAULT_HORIZON_DAYS)
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_HORIZON_DAYS):
        raise RequestRefused(
            400, f"days: expected a whole number from 1 to {MAX_HORIZON_DAYS}, got {text!r}"
        )
    return timedelta(days=int(text))


@router.get(
    "/api/v1/maintenance",
    summary="Maintenance windows: open now, upcoming, configured",
    tags=["read"],
    responses=errors(400, 401),
    openapi_extra=query(_HORIZON),
)
async def read_maintenance(request: Request) -> Response:
    """Windows open now and upcoming ones (each with its canaries and regions), and every
    configured window as compiled."""
    require_read(request)
    documented_query(request)
    return json_response(listing(control_of(request), _horizon(request)))


@router.get(
    "/operator/maintenance",
    summary="Maintenance windows (as the read API lists them)",
    tags=["operator"],
    responses=errors(400, 401, 404),
    openapi_extra=query(_HORIZON),
)
async def operator_maintenance(request: Request) -> Response:
    """The read API's listing, behind the admin token."""
    require_admin(request)
    documented_query(request)
    return json_response(listing(control_of(request), _horizon(request)))


class WindowOpen(BaseModel):
    """Body of `POST /operator/maintenance`: an ad-hoc window from now (or `start`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    canaries: CanarySelector
    regions: list[Slug] = Field(default_factory=list)
    description: str | None = None
    start: Instant | None = None
    end: Instant | None = None
    duration: str | None = Field(default=None, description="e.g. '2h' or '90m'.")


OPEN_FIELDS = {
    "name": "the window's name (lowercase letters, digits and '-')",
    "canaries": "{names: [globs], namespaces: [...], labels: {...}}; at least one of them",
    "regions": "region names (default: every region)",
    "description": "text shown on the status page",
    "start": "RFC 3339 time (default: now)",
    "end": "RFC 3339 time, or give duration",
    "duration": "e.g. '2h', or give end",
}


async def _open_fields(request: Request) -> dict[str, Any]:
    body = await read_model(request, WindowOpen, OPEN_FIELDS)
    problems = [
        f"canaries{'.' if path else ''}{'.'.join(map(str, path))}: {message}"
        for path, message in body.canaries.problems()
    ]
    if (body.end is None) == (body.duration is None):
        problems.append("end or duration: give exactly one of them")
    seconds = None
    if body.duration is not None:
        try:
            seconds = parse_duration(body.duration)
        except ValueError as error:
            problems.append(f"duration: {error}")
        else:
            if seconds <= 0:
                problems.append("duration: must be greater than 0")
    if problems:
        raise RequestRefused(422, "invalid body", errors=problems, expected=OPEN_FIELDS)
    return {**body.model_dump(exclude={"duration"}), "duration": seconds}


async def _commit(request: Request, edit: Any) -> Committed:
    edits: OperatorEdits = request.app.state.operator_edits
    return await edits.commit(edit)


def _window(control: ControlPlane, name: str) -> dict[str, Any] | None:
    resource = next((r for r in control.resources_of("Maintenance") if r.name == name), None)
    return None if resource is None else {"name": name, **resource.spec}


@router.post(
    "/operator/maintenance",
    summary="Open an ad-hoc maintenance window (committed to the config repository)",
    tags=["operator"],
    responses=errors(401, 404, 408, 409, 413, 415, 422),
    openapi_extra=json_body(model_schema(WindowOpen)),
)
async def open_window(request: Request) -> Response:
    """Commit a one-off window from now (or `start`) until `end` or for `duration`; 201."""
    require_admin(request)
    fields = await _open_fields(request)
    name = str(fields.pop("name"))
    control = control_of(request)
    now: datetime = control.clock()
    done = await _commit(
        request,
        lambda tree, schema: maintenance_edits.open_window(tree, name, fields, now, schema),
    )
    return json_response({"window": _window(control, name), **done.document()}, 201)


@router.post(
    "/operator/maintenance/{name}/close",
    summary="Close a maintenance window now (its end becomes now, committed)",
    tags=["operator"],
    responses=errors(401, 404, 409, 422),
)
async def close_window(request: Request, name: str) -> Response:
    """Commit the window's end as now; 409 for a recurring, future or finished window."""
    require_admin(request)
    control = control_of(request)
    now: datetime = control.clock()
    done = await _commit(request, lambda tree, _: maintenance_edits.close_window(tree, name, now))
    return json_response({"window": _window(control, name), **done.document()})
