"""Backing up the state file through the server, which holds it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    control_of,
    json_response,
    out_path,
    read_json,
    require_admin,
)
from reconciler.server.http.docs import errors, json_body
from reconciler.store.backup import BackupExists, backup_state
from reconciler.store.db import StateError

router = APIRouter(tags=["state"])


@router.post(
    "/api/state/backup",
    summary="Copy the state file into a new file (admin token)",
    responses=errors(401, 408, 409, 413, 415, 422),
    openapi_extra=json_body(
        {
            "type": "object",
            "properties": {
                "out": {
                    "type": "string",
                    "description": "An absolute path on the server where no file is yet.",
                }
            },
            "required": ["out"],
        }
    ),
)
async def backup(request: Request) -> Response:
    """`{"out": FILE}` copies every table, as of one moment, into a new DuckDB file FILE;
    ingest goes on meanwhile. Answers the path, its size, and the serial and lineage it holds."""
    require_admin(request)
    document = await read_json(request, '{"out": "/absolute/path.duckdb"}')
    target = out_path(document, "file", required=True)
    assert target is not None  # required: given, or refused
    try:
        made = await control_of(request).state.read(lambda c: backup_state(c, target))
    except BackupExists as error:
        raise RequestRefused(409, str(error)) from error
    except StateError as error:
        raise RequestRefused(422, str(error)) from error
    return json_response(made.document())
