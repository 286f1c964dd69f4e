"""Building the status site through the server, which holds the state file."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import APIRouter, Request, Response

from reconciler.server.http.common import admin_denied, control_of, json_response, problem

router = APIRouter(tags=["site"])


@router.post("/api/site/build", summary="Rebuild the status site now (admin token)")
async def build(request: Request) -> Response:
    """`{"out": DIR}` builds into DIR (an absolute path on the server); `{}` into its own."""
    denied = admin_denied(request)
    if denied is not None:
        return denied
    site = control_of(request).site
    if site is None:
        return problem(503, "the status site is not being built by this server")
    body = await request.body()
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as error:
        return problem(422, f'expected {{"out": "/absolute/dir"}} or nothing: {error}')
    out = document.get("out") if isinstance(document, dict) else None
    if out is not None and (not isinstance(out, str) or not Path(out).is_absolute()):
        return problem(422, "out must be an absolute directory path on the server")
    report = await site.build(Path(out) if out else None)
    return json_response(
        {
            "out": str(Path(out) if out else site.out_dir),
            "pages": report.published.pages,
            "written": report.published.written,
            "timings": report.timings,
        }
    )
