"""The notifications API: recent deliveries to receivers, with their status."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reconciler.server.http.common import (
    controllers_of,
    documented_query,
    json_response,
    query_limit,
    require_read,
)
from reconciler.server.http.docs import NOTIFICATIONS_RESPONSE, errors, query

router = APIRouter(prefix="/api/v1", tags=["read"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


@router.get(
    "/notifications",
    summary="Recent notification deliveries, newest first",
    responses={**NOTIFICATIONS_RESPONSE, **errors(400, 401)},
    openapi_extra=query(
        ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "At most (100)."),
    ),
)
async def list_notifications(request: Request) -> Response:
    """Each delivery of a notification through one integration of a receiver (or one
    `--notify-url` hook): receiver, integration, event types, status (`delivered`,
    `failed`, `skipped`), attempts, the last error and the time. The newest 500 are kept
    (in the state file, so a restart keeps them).
    `problems` lists receivers that cannot be reached as configured (a missing secret).
    """
    require_read(request)
    documented_query(request)
    limit = query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)
    notifications = controllers_of(request).notifications
    if notifications is None:
        return json_response({"routed": False, "problems": [], "deliveries": []})
    return json_response(
        {
            "routed": notifications.routed,
            "problems": list(notifications.problems),
            "deliveries": notifications.deliveries(limit),
        }
    )
