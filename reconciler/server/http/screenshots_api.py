"""Agents post the screenshot of a browser check run that did not pass, apart from its row."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import control_of, json_response, read_body
from reconciler.server.http.docs import errors, merged, query
from reconciler.store.screenshots import (
    MAX_SCREENSHOT_BYTES,
    PNG_SIGNATURE,
    Screenshot,
    store_screenshot,
)

router = APIRouter(prefix="/api/agent", tags=["agent"])


def _started_at(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RequestRefused(
            400, f"started_at: expected an RFC 3339 time with offset, got {str(text)[:60]!r}"
        )
    return moment


@router.post(
    "/screenshots",
    summary="Store the screenshot of a browser check run that did not pass",
    responses=errors(400, 401, 403, 408, 413, 415),
    openapi_extra=merged(
        query(
            ("canary", {"type": "string"}, "Derived canary id of the run."),
            ("check", {"type": "string"}, "Check name of the run."),
            ("started_at", {"type": "string", "format": "date-time"}, "The run's start."),
        ),
        {
            "requestBody": {
                "required": True,
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    ),
)
async def screenshots(request: Request) -> Response:
    """The body is the PNG; the run is named by the query (the row's canary, check and
    started_at). Only a browser check of the calling agent's config is accepted."""
    control = control_of(request)
    agent = control.authenticate(request.headers.get("authorization"))
    params = request.query_params
    canary, check = params.get("canary", ""), params.get("check", "")
    started_at = _started_at(params.get("started_at"))
    config = control.configs.get(agent)
    kind = config.checks.get(canary, {}).get(check) if config is not None else None
    if kind != "browser":
        raise RequestRefused(
            400, f"{canary!r} has no browser check {check!r} in the config of agent {agent}"
        )
    body = await read_body(request, MAX_SCREENSHOT_BYTES, "the screenshot")
    if not body.startswith(PNG_SIGNATURE):
        raise RequestRefused(400, "the screenshot is not a PNG image")
    shot = Screenshot(canary, check, started_at, agent, body)
    now = control.clock()
    deleted = await control.state.write(lambda c: store_screenshot(c, shot, now))
    control.metrics.count("screenshots_stored_total")
    return json_response({"stored": True, "deleted_older": deleted})
