"""The agent API: pull config with an ETag, post results."""

from __future__ import annotations

from datetime import datetime

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    control_of,
    json_response,
    read_body,
)
from schemas.wire import ResultBatch

router = APIRouter(prefix="/api/agent", tags=["agent"])


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in candidates or etag in candidates


@router.get("/targets", summary="The calling agent's derived canaries with full check specs")
async def targets(request: Request) -> Response:
    control = control_of(request)
    agent = control.authenticate(request.headers.get("authorization"))
    config = control.agent_config(agent)
    headers = {"ETag": config.etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), config.etag):
        return Response(status_code=304, headers=headers)
    return Response(config.body, media_type="application/json", headers=headers)


@router.post("/results", summary="Ingest a batch of check results")
async def results(request: Request) -> Response:
    control = control_of(request)
    agent = control.authenticate(request.headers.get("authorization"))
    limit = control.settings.max_batch_bytes
    body = await read_body(request, limit, "the batch")
    try:
        batch = ResultBatch.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError) as error:
        raise RequestRefused(400, f'expected {{"results": [row, ...]}}: {error}') from None
    sent_at: datetime | None = batch.sent_at
    outcome = await control.ingest(agent, batch.results, sent_at)
    return json_response(outcome)
