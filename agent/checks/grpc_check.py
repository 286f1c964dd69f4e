"""The grpc check: `grpc.health.v1.Health/Check` over plaintext or TLS; SERVING passes."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

# gRPC's fork handlers restart its poller thread in a forked child, which then dies with
# "epoll_wait error: Bad file descriptor" when the child closes descriptors before exec
# (grpc/grpc#43055). The agent forks only to exec (a browser check's Playwright driver),
# so it needs no fork support; set before gRPC is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402 - after the setting above
from grpc_health.v1 import health_pb2

from agent.checks.fields import flag, integer, items, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.pool import ClientPool
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError
from agent.expressions.celvars import grpc_context

_METHOD = "grpc.health.v1.Health/Check"


def _credentials(check: Mapping[str, Any]) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for plaintext (`tls: false` and no `tlsConfig`)."""
    tls = check.get("tlsConfig")
    if not flag(check, "tls", False) and not isinstance(tls, Mapping):
        return None
    ca = tls.get("ca") if isinstance(tls, Mapping) else None
    if isinstance(ca, str) and ca:
        return grpc.ssl_channel_credentials(root_certificates=ca.encode())
    return grpc.ssl_channel_credentials()


def _metadata(check: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for entry in items(check, "metadata"):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"metadata {entry!r} is not {{name, value}}")
        pairs.append((entry["name"].lower(), str(entry.get("value") or "")))
    return tuple(pairs)


class _Stale(Exception):
    """No kept channel to try first."""


# What a kept channel answers when its server went away (or another run closed it for that).
_RECONNECT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# A kept channel whose server went away retries its connection after a backoff that grows to
# two minutes by default; a probe wants to see a server that is back at its next run. And
# gRPC shares connections (subchannels) between channels to one address unless told not to:
# a fresh channel would inherit the old one's failed connection and its backoff.
_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
)


def _open(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(endpoint, options=_OPTIONS)
    return grpc.aio.secure_channel(endpoint, credentials, options=_OPTIONS)


async def _close(channel: grpc.aio.Channel) -> None:
    await channel.close()


async def _call(
    channel: grpc.aio.Channel,
    request: health_pb2.HealthCheckRequest,
    timeout_s: float,
    metadata: tuple[tuple[str, str], ...],
) -> health_pb2.HealthCheckResponse:
    call = channel.unary_unary(
        f"/{_METHOD}",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply: health_pb2.HealthCheckResponse = await call(
        request, timeout=timeout_s, metadata=metadata
    )
    return reply


def _rpc_failure(
    error: grpc.aio.AioRpcError, endpoint: str, timeout_s: float, start: float
) -> Verdict:
    """The verdict of a call that ended in an RPC error (a timeout is an error)."""
    elapsed = (time.perf_counter() - start) * 1000
    status = error.code()
    phases = {"total_ms": round(elapsed, 3)}
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        # As for the other check types, a timeout is an error: nothing was judged.
        message = f"timed out after {round(timeout_s * 1000)}ms ({_METHOD} on {endpoint}: "
        return Verdict("error", message + "DEADLINE_EXCEEDED)", status.value[0], phases)
    details = error.details() or ""
    message = f"{_METHOD} on {endpoint}: {status.name}" + (f" ({details})" if details else "")
    return Verdict("fail", message, status.value[0], phases)


async def check_grpc(check: Mapping[str, Any], clients: ClientPool) -> Verdict:
    """Ask the server at `endpoint` whether `service` is serving.

    The channel is kept in `clients` between runs (one per endpoint and TLS setting), so a
    run times one health call on an open connection; a run with no channel yet, or whose
    kept channel finds the server gone (UNAVAILABLE), connects afresh and times that too.

    Args:
        check: The check as served (endpoint, service, tls, tlsConfig, metadata,
            thresholdMillis, timeout_ms).
        clients: The agent's connections, where the channel is kept.

    Returns:
        "pass" when the answer is SERVING in time and the `test` holds; "fail" for any
        other answer, an RPC error (unreachable, unknown service), when slower than
        `thresholdMillis` or a false `test`; "error" at the timeout (DEADLINE_EXCEEDED)
        or for a broken expression. The code is the gRPC status code (0 is OK); phases
        carry total_ms.
    """
    endpoint = required_text(check, "endpoint")
    service = text(check, "service", "") or ""
    timeout_s = (integer(check, "timeout_ms") or 10_000) / 1000
    credentials = _credentials(check)
    tls = check.get("tlsConfig")
    ca = tls.get("ca") if isinstance(tls, Mapping) else None
    key = ("grpc", endpoint, credentials is not None, ca if isinstance(ca, str) else "")
    request = health_pb2.HealthCheckRequest(service=service)
    metadata = _metadata(check)
    start = time.perf_counter()
    kept = clients.kept(key)
    try:
        if kept is None:
            raise _Stale
        reply = await _call(kept, request, timeout_s, metadata)
    except (_Stale, grpc.aio.AioRpcError) as first:
        if isinstance(first, grpc.aio.AioRpcError) and first.code() not in _RECONNECT:
            return _rpc_failure(first, endpoint, timeout_s, start)
        # No channel yet, or the kept one lost its server: a fresh channel connects now
        # instead of waiting out the old one's reconnect backoff.
        if kept is not None and clients.kept(key) is kept:
            await clients.discard(key)
        channel = clients.kept(key)  # another run may have connected in the meantime
        if channel is None:
            channel = _open(endpoint, credentials)
            clients.keep(key, channel, _close)
        remaining = timeout_s - (time.perf_counter() - start)
        try:
            reply = await _call(channel, request, max(remaining, 0.001), metadata)
        except grpc.aio.AioRpcError as error:
            return _rpc_failure(error, endpoint, timeout_s, start)
    elapsed = (time.perf_counter() - start) * 1000
    phases = {"total_ms": round(elapsed, 3), "serving_status": int(reply.status)}
    serving = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    who = f"service {service!r}" if service else "the server"
    failures = [] if serving == "SERVING" else [f"{who} is {serving}"]
    failures += over_threshold(elapsed, threshold(check))
    variables = grpc_context(serving, elapsed)
    data = {"status": serving, "code": 0, "elapsed": timedelta(milliseconds=elapsed)}
    try:
        shown = apply_rules(check, failures, variables, data)
    except CelError as error:
        return Verdict("error", str(error), 0, phases)
    return judge(failures, shown or f"{who} is {serving}", code=0, phases=phases)
