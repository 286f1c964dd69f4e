"""Operations: health, readiness, metrics, status, and the git webhook."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    control_of,
    json_response,
    read_body,
    require_read,
)

router = APIRouter(tags=["operations"])

# GitHub caps webhook payloads at 25 MB; a push event is a few kilobytes.
MAX_WEBHOOK_BYTES = 1024 * 1024


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Ready once the first revision is applied")
async def readyz(request: Request) -> Response:
    control = control_of(request)
    # A generic flag only: which loop failed and why is in the (protected) status.
    loops_ok = not control.loops.failing
    if control.ready.is_set():
        return json_response({"status": "ready", "loops_ok": loops_ok})
    return json_response({"status": "starting", **control.status(), "loops_ok": loops_ok}, 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    control = control_of(request)
    return Response(control.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/v1/status", summary="Current revision, last attempted revision, its errors")
async def status(request: Request) -> Response:
    require_read(request)
    control = control_of(request)
    return json_response({**control.status(), "loops": control.loops.status()})


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's `X-Hub-Signature-256: sha256=<hex HMAC of the body>`."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[7:], expected)


@router.post("/hooks/git", summary="Reconcile now (a push webhook, HMAC-signed)")
async def git_hook(request: Request) -> Response:
    control = control_of(request)
    secret = control.settings.webhook_secret
    if not secret:
        raise RequestRefused(404, "the webhook is disabled: set RECONCILER_WEBHOOK_SECRET")
    body = await read_body(request, MAX_WEBHOOK_BYTES, "the webhook body")
    if not signature_valid(secret, body, request.headers.get("x-hub-signature-256")):
        raise RequestRefused(401, "missing or invalid X-Hub-Signature-256")
    request.app.state.trigger("webhook")
    return json_response({"queued": True}, 202)
