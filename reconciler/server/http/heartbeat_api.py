"""Heartbeat pings (`/api/v1/heartbeat/{token}`) and the operator's heartbeat tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.core.refusal import RequestRefused
from reconciler.server.heartbeats import Heartbeats, PingKind
from reconciler.server.http.common import (
    controllers_of,
    json_response,
    read_body,
    read_json,
    require_admin,
)
from reconciler.server.http.docs import errors, json_body, model_schema

router = APIRouter(tags=["heartbeats"])

PING_PATH = "/api/v1/heartbeat/{token}"
# A ping's body is the job's message (its output's tail, say): read up to this, refused above.
MAX_PING_BODY_BYTES = 10 * 1024
# The part of it stored as the row's message (the rest is dropped, and the message says so).
MAX_PING_MESSAGE_CHARS = 1024

_PING_DOC = (
    "Unauthenticated apart from the token in the path, which the job keeps (as Healthchecks "
    f"and Uptime Kuma push monitors do). A body, up to {MAX_PING_BODY_BYTES} bytes, is "
    f"stored as the row's message (its first {MAX_PING_MESSAGE_CHARS} characters). A token "
    "that is not a served heartbeat's answers 404 whatever was wrong with it."
)
_TEXT_BODY = {
    "requestBody": {
        "required": False,
        "content": {"text/plain": {"schema": {"type": "string", "maxLength": MAX_PING_BODY_BYTES}}},
    }
}
_PING_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The ping was taken.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "outcome": {"enum": ["stored", "coalesced", "dropped"]},
                    },
                }
            }
        },
    }
}


def _heartbeats(request: Request) -> Heartbeats:
    found = controllers_of(request).heartbeats
    if found is None:
        raise RequestRefused(404, "not found")
    return found


def _message(body: bytes) -> str | None:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if len(text) > MAX_PING_MESSAGE_CHARS:
        kept = MAX_PING_MESSAGE_CHARS - 40
        return text[:kept] + f" … ({len(text) - kept} more characters not kept)"
    return text


async def _ping(request: Request, token: str, kind: PingKind) -> Response:
    heartbeats = _heartbeats(request)
    key = heartbeats.key_of(token)  # before the body: an unknown token reads nothing
    body = await read_body(request, MAX_PING_BODY_BYTES, "the ping's body")
    outcome = await heartbeats.ping(key, kind, _message(body))
    return json_response({"ok": True, "outcome": outcome})


def _ping_route(path: str, kind: PingKind, summary: str) -> None:
    async def endpoint(request: Request, token: str) -> Response:
        return await _ping(request, token, kind)

    endpoint.__name__ = f"heartbeat_{kind}"
    # One route per method: a route with two methods would give both one operation id.
    for method in ("GET", "POST"):
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            summary=summary,
            description=_PING_DOC,
            operation_id=f"heartbeat_{kind}_{method.lower()}",
            responses={**_PING_ANSWER, **errors(404, 408, 413, 415)},
            openapi_extra=_TEXT_BODY if method == "POST" else None,
        )


_ping_route(PING_PATH, "ping", "A heartbeat's job ran: stores a passing run")
_ping_route(PING_PATH + "/fail", "fail", "A heartbeat's job failed: stores a failed run")
_ping_route(
    PING_PATH + "/start",
    "start",
    "A heartbeat's job started: the next ping's run lasts from here (nothing stored)",
)


class TokenRequest(BaseModel):
    """Which heartbeat to mint a token for."""

    model_config = ConfigDict(extra="forbid")

    canary: str = Field(min_length=1, max_length=300, description="`namespace/name`.")
    check: str = Field(min_length=1, max_length=128, description="The heartbeat check's name.")


@router.get(
    "/operator/heartbeats",
    summary="Heartbeat checks with their last ping and deadline",
    responses=errors(401, 404),
    tags=["operator"],
)
async def list_heartbeats(request: Request) -> Response:
    require_admin(request)
    views = _heartbeats(request).views()
    return json_response({"heartbeats": [view.document() for view in views]})


@router.post(
    "/operator/heartbeats/token",
    summary="Mint or rotate a heartbeat's token (shown once)",
    responses=errors(401, 404, 413, 415, 422),
    openapi_extra=json_body(model_schema(TokenRequest)),
    tags=["operator"],
)
async def mint(request: Request) -> Response:
    require_admin(request)
    heartbeats = _heartbeats(request)
    raw: Any = await read_json(request, "{canary, check}", limit=4096)
    try:
        wanted = TokenRequest.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
        )
        raise RequestRefused(422, f"expected {{canary, check}}: {problems}") from None
    token = await heartbeats.mint(wanted.canary, wanted.check)
    document = {
        "canary": wanted.canary,
        "check": wanted.check,
        "token": token,
        "ping_path": PING_PATH.format(token=token),
    }
    return json_response(document, 201)
