"""The agent API: pull config with an ETag, post results."""

from __future__ import annotations

import asyncio
import contextlib
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
from schemas.wire import MAX_PULL_WAIT, ResultBatch
from schemas.wire import PULL_WAIT_HEADER as WAIT_HEADER

router = APIRouter(prefix="/api/agent", tags=["agent"])


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in candidates or etag in candidates


def _wait_seconds(text: str | None) -> float:
    """The `wait` parameter: seconds to hold a pull whose ETag still matches."""
    if text is None:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_PULL_WAIT:  # also NaN
        raise RequestRefused(
            400, f"wait: expected seconds from 0 to {MAX_PULL_WAIT:g}, got {text[:40]!r}"
        )
    return wait


@router.get("/targets", summary="The calling agent's derived canaries with full check specs")
async def targets(request: Request) -> Response:
    """With `If-None-Match` naming the current ETag, 304; with `wait=SECONDS` too, the answer
    waits until the agent's config changes (200), the agent may no longer pull (401/403), or
    the wait ends (304): a long poll (docs/agent-protocol.md)."""
    control = control_of(request)
    authorization = request.headers.get("authorization")
    agent = control.authenticate(authorization)
    wait = _wait_seconds(request.query_params.get("wait"))
    config = control.agent_config(agent)
    matches = _etag_matches(request.headers.get("if-none-match"), config.etag)
    if matches and wait > 0:
        deadline = asyncio.get_running_loop().time() + wait
        while matches and not control.pulls_released:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(control.pulls_changed().wait(), remaining)
            agent = control.authenticate(authorization)  # revoked meanwhile: told now
            config = control.agent_config(agent)
            matches = _etag_matches(request.headers.get("if-none-match"), config.etag)
    headers = {"ETag": config.etag, "Cache-Control": "no-cache"}
    if wait > 0:
        headers[WAIT_HEADER] = f"{wait:g}"  # the agent knows this server holds pulls
    if matches:
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
