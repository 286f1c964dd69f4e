"""Building the status site through the server, which holds the state file."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    controllers_of,
    json_response,
    out_path,
    read_json,
    require_admin,
)
from reconciler.server.http.docs import errors, json_body
from reconciler.sitebuild import Report, SiteError

router = APIRouter(tags=["site"])


@router.post(
    "/api/site/build",
    summary="Rebuild the status site now (admin token)",
    responses=errors(401, 404, 408, 413, 415, 422),
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
    out = out_path(document, "directory", required=False)
    report = await _build_into(request, out)
    return json_response(
        {
            "out": str(out or site.out_dir),
            "pages": report.published.pages,
            "written": report.published.written,
            "timings": report.timings,
        }
    )


async def _build_into(request: Request, out: Path | None) -> Report:
    """Build the site into `out` (None: the server's own directory).

    A directory that cannot be a site (not empty and not one, a file, under a missing
    parent, a name too long, a NUL byte) is the caller's mistake, not the server's: 422
    with what is wrong, as `reconcile site build` says it. Each is found before anything
    is written there.

    Raises:
        RequestRefused: 422 when `out` cannot be written.
    """
    if out is not None and "\0" in str(out):
        raise RequestRefused(422, f"out: a path cannot hold a NUL byte, got {str(out)!r}")
    try:
        return await controllers_of(request).site.build(out)
    except SiteError as error:
        raise RequestRefused(422, str(error)) from error
    except OSError as error:
        if out is None:
            raise  # the server's own directory: its fault, not the caller's
        why = error.strerror or str(error)
        raise RequestRefused(422, f"cannot write the site to {out}: {why}") from error
