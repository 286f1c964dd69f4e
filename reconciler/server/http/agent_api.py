"""The agent API: pull config with an ETag, post results."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from reconciler.core.refusal import RequestRefused
from reconciler.core.result_columns import decode_batch
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.common import (
    control_of,
    json_response,
    read_body,
)
from reconciler.server.http.docs import errors, header, json_body, merged, model_schema, query
from schemas.wire import MAX_PULL_WAIT, ResultBatch, ResultRow
from schemas.wire import PULL_WAIT_HEADER as WAIT_HEADER

router = APIRouter(prefix="/api/agent", tags=["agent"])
TARGETS_PATH = "/api/agent/targets"

# Rows are validated one by one, so any element is accepted; the schema shows a good one.
BATCH_SCHEMA = {
    **model_schema(ResultBatch),
    "properties": {
        **model_schema(ResultBatch)["properties"],
        "results": {"type": "array", "items": model_schema(ResultRow)},
    },
}


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


@router.get(
    "/targets",
    summary="The calling agent's derived canaries with full check specs",
    responses=errors(400, 401, 403),
    openapi_extra=merged(
        header("If-None-Match", "The ETag of the config held: 304 if unchanged."),
        query(
            (
                "wait",
                {"type": "number", "minimum": 0, "maximum": MAX_PULL_WAIT},
                "Seconds to hold the answer while the ETag still matches (a long poll).",
            )
        ),
    ),
)
async def targets(request: Request) -> Response:
    """With `If-None-Match` naming the current ETag, 304; with `wait=SECONDS` too, the answer
    waits until the agent's config changes (200), the agent may no longer pull (401/403), or
    the wait ends (304): a long poll (docs/agent-protocol.md).

    `reconcile serve` answers this path in `asgi.TargetsFastPath`, before FastAPI's router;
    this route documents it and serves an app built without that layer."""
    return await answer_targets(
        control_of(request),
        request.headers.get("authorization"),
        request.headers.get("if-none-match"),
        request.query_params.get("wait"),
    )


async def answer_targets(
    control: ControlPlane,
    authorization: str | None,
    if_none_match: str | None,
    wait_text: str | None,
) -> Response:
    """The answer to a config pull: 200 with the prepared body, or 304, maybe after a wait.

    Raises:
        RequestRefused: 401/403 for the token or agent, 400 for a bad `wait`.
    """
    agent = control.authenticate(authorization)
    wait = _wait_seconds(wait_text)
    config = control.agent_config(agent)
    matches = _etag_matches(if_none_match, config.etag)
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
            matches = _etag_matches(if_none_match, config.etag)
    headers = {"ETag": config.etag, "Cache-Control": "no-cache"}
    if wait > 0:
        headers[WAIT_HEADER] = f"{wait:g}"  # the agent knows this server holds pulls
    if matches:
        return Response(status_code=304, headers=headers)
    return Response(config.body, media_type="application/json", headers=headers)


# One thread parses every batch: off the event loop, and with no pool of threads taking the
# GIL from each other (and from the loop and the state writer) to do the same work.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-parser")


@dataclass(frozen=True)
class ParsedBatch:
    """A results body: its rows, as columns when every one was read at once, else as decoded
    JSON to be validated row by row; and the agent's clock."""

    rows: list[Any] | pa.Table
    sent_at: datetime | None


def parse_batch(body: bytes, max_rows: int) -> ParsedBatch:
    """A results body as a batch of at most `max_rows` rows.

    CPU-bound on a large body, so the route runs it in a worker thread. A body whose rows
    are all valid is read into columns in one pass from its JSON
    (`result_columns.decode_batch`); any other body is decoded first, its row count checked,
    and its rows validated one by one later (`validate_rows`), so each bad row is dropped on
    its own.

    Raises:
        RequestRefused: 400 for a body that is not a batch, 413 for too many rows.
    """
    decoded = decode_batch(body)
    if decoded is not None and decoded.columns.num_rows <= max_rows:
        return ParsedBatch(decoded.columns, decoded.sent_at)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestRefused(400, f'expected {{"results": [row, ...]}}: {error}') from None
    rows = document.get("results") if isinstance(document, dict) else None
    if isinstance(rows, list) and len(rows) > max_rows:
        raise RequestRefused(
            413,
            f"the batch has {len(rows)} rows; at most {max_rows} rows per batch "
            "(set by RECONCILER_MAX_BATCH_ROWS); send smaller batches",
            limit=max_rows,
        )
    try:
        batch = ResultBatch.model_validate(document)
    except ValidationError as error:
        raise RequestRefused(400, f'expected {{"results": [row, ...]}}: {error}') from None
    return ParsedBatch(batch.results, batch.sent_at)


@router.post(
    "/results",
    summary="Ingest a batch of check results",
    responses=errors(400, 401, 403, 408, 413, 415),
    openapi_extra=json_body(BATCH_SCHEMA),
)
async def results(request: Request) -> Response:
    control = control_of(request)
    agent = control.authenticate(request.headers.get("authorization"))
    settings = control.settings
    # Counted as on its way until its rows are read: the writer waits a moment for them.
    with control.ingest_queue.coming():
        body = await read_body(
            request, settings.max_batch_bytes, "the batch", "RECONCILER_MAX_BATCH_BYTES"
        )
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(_PARSER, parse_batch, body, settings.max_batch_rows)
    outcome = await control.ingest(agent, batch.rows, batch.sent_at)
    return json_response(outcome)
