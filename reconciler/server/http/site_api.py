"""Building the status site through the server, which holds the state file."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    controllers_of,
    json_response,
    read_json,
    require_admin,
)
from reconciler.server.http.docs import errors, json_body

router = APIRouter(tags=["site"])


@router.post(
    "/api/site/build",
    summary="Rebuild the status site now (admin token)",
    responses=errors(401, 404, 408, 413, 422),
    openapi_extra=json_body(
        {
            "type": "object",
            "properties": {
                "out": {"type": "string", "description": "An absolute directory on the server."}
            },
        },
        required=False,
    ),
)
async def build(request: Request) -> Response:
    """`{"out": DIR}` builds into DIR (an absolute path on the server); `{}` into its own."""
    require_admin(request)
    site = controllers_of(request).site
    document = await read_json(request, '{"out": "/absolute/dir"} or nothing')
    out = document.get("out") if isinstance(document, dict) else None
    if out is not None and (not isinstance(out, str) or not Path(out).is_absolute()):
        raise RequestRefused(422, "out must be an absolute directory path on the server")
    report = await site.build(Path(out) if out else None)
    return json_response(
        {
            "out": str(Path(out) if out else site.out_dir),
            "pages": report.published.pages,
            "written": report.published.written,
            "timings": report.timings,
        }
    )
