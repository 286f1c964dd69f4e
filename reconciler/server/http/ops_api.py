"""Operations: health, readiness, metrics, status, and the git webhook."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.server.http.common import (
    control_of,
    controllers_of,
    documented_query,
    json_response,
    read_body,
    require_read,
)
from reconciler.server.http.docs import errors, header, json_body, merged
from reconciler.server.http.webhook import SIGNATURE_HEADER, ReplayGuard, signature_valid

router = APIRouter(tags=["operations"])

# GitHub caps webhook payloads at 25 MB; a push event is a few kilobytes.
MAX_WEBHOOK_BYTES = 1024 * 1024


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Ready once the first revision is applied", responses=errors(503))
async def readyz(request: Request) -> Response:
    """Ready or not, with a generic reason; no config, revision or error detail without a token.

    The load errors behind a failed start quote the config, its authors and its path: they
    are in `GET /api/v1/status`, behind the read token.
    """
    control = control_of(request)
    # A generic flag only: which loop failed and why is in the (protected) status.
    loops_ok = not control.loops.failing
    if control.ready.is_set():
        return json_response({"status": "ready", "loops_ok": loops_ok})
    attempt = control.last_attempt
    if attempt is not None and attempt.errors:
        reason = "the configuration could not be applied; details in /api/v1/status"
    else:
        reason = "no revision applied yet"
    return json_response(
        {"status": "starting", "ready": False, "reason": reason, "loops_ok": loops_ok}, 503
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    control = control_of(request)
    text = control.render_metrics() + await control.probe_series()
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/api/v1/status",
    summary="Current revision, last attempted revision, its errors",
    responses=errors(401),
)
async def status(request: Request) -> Response:
    require_read(request)
    documented_query(request)
    control = control_of(request)
    refusals = controllers_of(request).deployments.gateway_refusals()
    return json_response(
        {**control.status(), "loops": control.loops.status(), "gateway_refusals": refusals}
    )


@router.post(
    "/hooks/git",
    summary="Reconcile now (a push webhook, HMAC-signed)",
    responses=errors(401, 404, 408, 409, 413, 415),
    openapi_extra=merged(
        json_body({"type": "object", "description": "The push event, as the forge sends it."}),
        header("X-Hub-Signature-256", "sha256=<hex HMAC-SHA256 of the body>", required=True),
    ),
)
async def git_hook(request: Request) -> Response:
    control = control_of(request)
    secret = control.settings.webhook_secret
    if not secret:
        raise RequestRefused(404, "the webhook is disabled: set RECONCILER_WEBHOOK_SECRET")
    # Checked before the body is read: an unsigned request costs no more than its headers.
    header = request.headers.get(SIGNATURE_HEADER)
    if not header or not header.startswith("sha256="):
        raise RequestRefused(401, "missing or invalid X-Hub-Signature-256")
    body = await read_body(request, MAX_WEBHOOK_BYTES, "the webhook body")
    if not signature_valid(secret, body, header):
        raise RequestRefused(401, "missing or invalid X-Hub-Signature-256")
    guard: ReplayGuard = request.app.state.webhook_replays
    earlier = guard.first_time(header[7:], control.clock())
    if earlier is not None:
        window = control.settings.webhook_replay_window
        raise RequestRefused(
            409,
            f"this delivery (same body and signature) was already received at "
            f"{earlier.isoformat()}; a delivery is acted on once within {window:g} s "
            "(set by RECONCILER_WEBHOOK_REPLAY_WINDOW)",
        )
    request.app.state.trigger("webhook")
    return json_response({"queued": True}, 202)
