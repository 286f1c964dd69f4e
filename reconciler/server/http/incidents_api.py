"""The incidents API: open and recent incidents across regions, with their timelines."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    controllers_of,
    documented_query,
    json_response,
    query_limit,
    require_read,
)
from reconciler.server.http.docs import errors, query

router = APIRouter(prefix="/api/v1", tags=["read"])

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
STATES = ("open", "resolved")


@router.get(
    "/incidents",
    summary="Open incidents first, then the most recent ones",
    responses=errors(400, 401),
    openapi_extra=query(
        ("canary", {"type": "string"}, "A target id, `namespace.name`."),
        ("state", {"type": "string", "enum": list(STATES)}, "open or resolved."),
        ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "At most (50)."),
    ),
)
async def list_incidents(request: Request) -> Response:
    """Incidents with their region timelines: open ones first, then newest first.

    Filters: `canary=<id>` (the read API's target id, `namespace.name`), `state=open` or
    `state=resolved`, and `limit=` (50, at most 1000). An incident covers every region of its
    canary, so its `region` is always null; `regions_down` and `timeline` say which regions
    were down, and when.
    """
    require_read(request)
    documented_query(request)
    params = request.query_params
    canary = params.get("canary") or None
    state = params.get("state") or None
    if state is not None and state not in STATES:
        raise RequestRefused(400, f"state: expected 'open' or 'resolved', got {state!r}")
    limit = query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)
    key = canary.replace(".", "/", 1) if canary is not None else None
    found = await controllers_of(request).incidents.recent(key, state, limit)
    incidents = [{"target": str(i["canary"]).replace("/", "."), **i} for i in found]
    return json_response({"incidents": incidents})
