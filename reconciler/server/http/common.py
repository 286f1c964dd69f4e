"""Helpers every route module shares: JSON responses, the access checks, bounded bodies."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.listener import CUT_METRIC
from reconciler.server.http.parts import Controllers

# The most an endpoint without its own limit reads of a request body.
MAX_BODY_BYTES = 64 * 1024


def control_of(request: Request) -> ControlPlane:
    """The control plane the app serves."""
    control: ControlPlane = request.app.state.control
    return control


def controllers_of(request: Request) -> Controllers:
    """The controllers the app serves (incidents, canary deployments, site rebuilds)."""
    controllers: Controllers = request.app.state.controllers
    return controllers


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
    if status == 415:
        # RFC 9110: a body refused for its content coding names the codings accepted.
        headers = {"Accept-Encoding": "identity"}
    if status == 408:
        # The client is too slow to finish its request: do not wait for the rest of it.
        headers = {"Connection": "close"}
    return json_response({"error": detail, **extra}, status, headers)


async def answer_refusal(request: Request, refused: Exception) -> Response:
    """The app's one error handler: a `RequestRefused` anywhere becomes its JSON answer."""
    assert isinstance(refused, RequestRefused)
    return problem(refused.status, refused.message, **refused.details)


async def answer_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (unknown path, wrong method) in the same JSON shape."""
    assert isinstance(error, StarletteHTTPException)
    response = problem(error.status_code, error.detail)
    response.headers.update(error.headers or {})
    return response


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether `Authorization: Bearer <token>` carries `expected`, compared in constant time."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(authorization[7:].strip().encode(), expected.encode())


def refuse_compressed(request: Request, what: str = "the body") -> None:
    """Refuses (415) a body sent with a `Content-Encoding` other than `identity`.

    Bodies are read as sent and never decompressed: a gzip batch would otherwise be refused
    for what its bytes look like (not UTF-8, not JSON) rather than for being compressed.

    Raises:
        RequestRefused: 415, naming the header and the codings given.
    """
    given = ", ".join(request.headers.getlist("content-encoding"))
    codings = [coding.strip().lower() for coding in given.split(",")]
    if any(coding not in ("", "identity") for coding in codings):
        raise RequestRefused(
            415,
            f"Content-Encoding: {given.strip()[:40]!r} is not accepted: compressed bodies are "
            f"not read; send {what} uncompressed (no Content-Encoding, or identity)",
        )


async def read_body(
    request: Request,
    limit: int = MAX_BODY_BYTES,
    what: str = "the body",
    set_by: str | None = None,
) -> bytes:
    """The request body, refusing (without reading it all) anything over `limit` bytes.

    The body is read as it arrives and reading stops at the first byte past the limit; a
    `Content-Length` over the limit is refused before anything is read. The whole body must
    arrive within the server's `body_timeout`.

    Args:
        request: the request.
        limit: the most bytes accepted.
        what: what the body is, for the error.
        set_by: the setting (environment variable) the limit comes from; None when fixed.

    Raises:
        RequestRefused: 415 for a compressed body (`refuse_compressed`), 413 when the body is
            larger than `limit`, 408 when it is too slow.
    """
    refuse_compressed(request, what)
    where = f"set by {set_by}" if set_by else "a fixed limit of this endpoint"
    too_large = RequestRefused(413, f"{what} is larger than {limit} bytes ({where})", limit=limit)
    declared = request.headers.get("content-length")
    # A length of more than 18 digits is over any limit (and int() of it is slow).
    digits = declared is not None and declared.isascii() and declared.isdigit()
    if digits and declared is not None and (len(declared) > 18 or int(declared) > limit):
        raise too_large
    timeout = control_of(request).settings.body_timeout
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; refusing keeps the traceback out of the log.
        raise RequestRefused(400, f"the client went away while sending {what}") from None
    except TimeoutError:
        control_of(request).metrics.count(CUT_METRIC, reason="body_timeout")
        raise RequestRefused(
            408,
            f"{what} did not arrive within {timeout:g} s "
            f"(set by RECONCILER_BODY_TIMEOUT); {size} bytes were received",
        ) from None
    return b"".join(chunks)


async def read_json(request: Request, expected: str, limit: int = MAX_BODY_BYTES) -> Any:
    """The request body parsed as JSON (an empty body is None).

    Raises:
        RequestRefused: 415 for a compressed body, 413 over `limit`, 422 for a body that is
            not JSON, saying `expected`.
    """
    body = await read_body(request, limit)
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestRefused(422, f"the body is not JSON ({error}); expected {expected}") from None


Model = TypeVar("Model", bound=BaseModel)


async def read_model(request: Request, model: type[Model], expected: dict[str, str]) -> Model:
    """The body as a JSON object validated by `model`.

    Raises:
        RequestRefused: 413 over the size limit; 422 for a body that is not a JSON object or
            not valid, with each problem (`field: message`) and the `expected` fields.
    """
    data = await read_json(request, "a JSON object")
    if not isinstance(data, dict):
        raise RequestRefused(422, "the body must be a JSON object", expected=expected)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors()
        ]
        raise RequestRefused(422, "invalid body", errors=errors, expected=expected) from None


def require_read(request: Request) -> None:
    """Refuses (401) a request without RECONCILER_READ_TOKEN when one is set.

    Raises:
        RequestRefused: 401.
    """
    expected = control_of(request).settings.read_token
    if expected and not bearer_matches(request.headers.get("authorization"), expected):
        raise RequestRefused(401, "this API requires the read token (RECONCILER_READ_TOKEN)")


def documented_query(request: Request) -> None:
    """Refuses (400) a query parameter the matched route does not document (`docs.query`):
    a misspelt `?limt=5`, or `?window=1h` where the window is `since=`, must not be answered
    for the defaults as if it had not been written. A parameter given empty or more than
    once is refused too (`readable_query`).

    Raises:
        RequestRefused: 400, naming the unknown parameters and the ones the route takes, or
            the parameter given empty or repeated.
    """
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    known = [p["name"] for p in extra.get("parameters", []) if p.get("in") == "query"]
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        named = ", ".join(repr(name) for name in unknown)
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        plural = "s" if len(unknown) > 1 else ""
        raise RequestRefused(400, f"unknown query parameter{plural} {named}; {takes}")
    readable_query(request)


def readable_query(request: Request) -> None:
    """Refuses (400) a query parameter given with an empty value or given more than once.

    `?since=` would otherwise be answered for the default window, and `?since=1h&since=2h`
    for whichever value a route happened to read, as if the client had asked for that.

    Raises:
        RequestRefused: 400, naming the first such parameter.
    """
    counts: dict[str, int] = {}
    for name, value in request.query_params.multi_items():
        counts[name] = counts.get(name, 0) + 1
        if not value:
            raise RequestRefused(
                400, f"{name}: the value is empty; give one, or leave {name} out for its default"
            )
    for name, count in counts.items():
        if count > 1:
            times = "twice" if count == 2 else f"{count} times"
            raise RequestRefused(400, f"{name}: given {times}; give each parameter once")


def out_path(document: Any, kind: str, *, required: bool) -> Path | None:
    """The `out` of an admin request's body (`{"out": "/absolute/path"}`): where on the
    server a site or a backup is written. None when it is not given and not `required`.

    Raises:
        RequestRefused: 422 when it is missing (and required), not a string, or relative.
    """
    out = document.get("out") if isinstance(document, dict) else None
    if out is None and not required:
        return None
    if not isinstance(out, str) or not Path(out).is_absolute():
        raise RequestRefused(422, f"out must be an absolute {kind} path on the server")
    return Path(out)


def query_limit(request: Request, default: int, most: int) -> int:
    """`limit=`: a whole number from 1 to `most` (`default` without it).

    Raises:
        RequestRefused: 400, for anything else.
    """
    text = request.query_params.get("limit")
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= most:
        raise RequestRefused(400, f"limit: expected a whole number from 1 to {most}, got {text!r}")
    return int(text)


def require_admin(request: Request) -> None:
    """Refuses a request when the admin APIs are off (404) or the admin token is wrong (401).

    Raises:
        RequestRefused: 404 or 401.
    """
    expected = control_of(request).settings.admin_token
    if not expected:
        raise RequestRefused(404, "not found")
    if not bearer_matches(request.headers.get("authorization"), expected):
        raise RequestRefused(401, "missing or invalid admin token")
