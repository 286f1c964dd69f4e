"""Helpers every route module shares: JSON responses, bearer checks, body limits."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import Request, Response

from reconciler.server.control_plane import ControlPlane


def control_of(request: Request) -> ControlPlane:
    """The control plane the app serves."""
    control: ControlPlane = request.app.state.control
    return control


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Pre-encoded JSON (FastAPI's encoder is the slow path for large documents)."""
    return Response(
        orjson.dumps(document), status_code=status, media_type="application/json", headers=headers
    )


def problem(status: int, detail: str, **extra: Any) -> Response:
    """An error body that says what went wrong (401s say which scheme to use)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return json_response({"error": detail, **extra}, status, headers)


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether `Authorization: Bearer <token>` carries `expected`, compared in constant time."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(authorization[7:].strip().encode(), expected.encode())


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (without reading it all) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def read_denied(request: Request) -> Response | None:
    """401 when RECONCILER_READ_TOKEN is set and the request does not carry it, else None."""
    expected = control_of(request).settings.read_token
    if expected and not bearer_matches(request.headers.get("authorization"), expected):
        return problem(401, "this API requires the read token (RECONCILER_READ_TOKEN)")
    return None


def admin_denied(request: Request) -> Response | None:
    """404 when the admin APIs are off (no admin token set), 401 for a wrong token, else None."""
    expected = control_of(request).settings.admin_token
    if not expected:
        return problem(404, "not found")
    if not bearer_matches(request.headers.get("authorization"), expected):
        return problem(401, "missing or invalid admin token")
    return None
