"""The grpc check: `grpc.health.v1.Health/Check` over plaintext or TLS; SERVING passes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import grpc
from celpy import celtypes
from grpc_health.v1 import health_pb2

from agent.checks.fields import flag, integer, items, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError

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


async def check_grpc(check: Mapping[str, Any]) -> Verdict:
    """Ask the server at `endpoint` whether `service` is serving.

    Args:
        check: The check as served (endpoint, service, tls, tlsConfig, metadata,
            thresholdMillis, timeout_ms).

    Returns:
        "pass" when the answer is SERVING in time and the `test` holds; "fail" for any
        other answer, an RPC error (unreachable, unknown service), when slower than
        `thresholdMillis` or a false `test`; "error" at the timeout (DEADLINE_EXCEEDED)
        or for a broken expression. The
        code is the gRPC status code (0 is OK); phases carry total_ms.
    """
    endpoint = required_text(check, "endpoint")
    service = text(check, "service", "") or ""
    timeout_s = (integer(check, "timeout_ms") or 10_000) / 1000
    credentials = _credentials(check)
    metadata = _metadata(check)
    start = time.perf_counter()
    channel = (
        grpc.aio.insecure_channel(endpoint)
        if credentials is None
        else grpc.aio.secure_channel(endpoint, credentials)
    )
    try:
        call = channel.unary_unary(
            f"/{_METHOD}",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = await call(request, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            elapsed = (time.perf_counter() - start) * 1000
            status = error.code()
            details = error.details() or ""
            if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                # As for the other check types, a timeout is an error: nothing was judged.
                return Verdict(
                    "error",
                    f"timed out after {round(timeout_s * 1000)}ms ({_METHOD} on {endpoint}: "
                    "DEADLINE_EXCEEDED)",
                    status.value[0],
                    {"total_ms": round(elapsed, 3)},
                )
            return Verdict(
                "fail",
                f"{_METHOD} on {endpoint}: {status.name}" + (f" ({details})" if details else ""),
                status.value[0],
                {"total_ms": round(elapsed, 3)},
            )
    finally:
        await channel.close()
    elapsed = (time.perf_counter() - start) * 1000
    phases = {"total_ms": round(elapsed, 3), "serving_status": int(reply.status)}
    serving = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    who = f"service {service!r}" if service else "the server"
    failures = [] if serving == "SERVING" else [f"{who} is {serving}"]
    failures += over_threshold(elapsed, threshold(check))
    variables = {
        "status": celtypes.StringType(serving),
        "code": celtypes.IntType(0),
        "elapsed": celtypes.DurationType(timedelta(milliseconds=elapsed)),
    }
    data = {"status": serving, "code": 0, "elapsed": timedelta(milliseconds=elapsed)}
    try:
        shown = apply_rules(check, failures, variables, data)
    except CelError as error:
        return Verdict("error", str(error), 0, phases)
    return judge(failures, shown or f"{who} is {serving}", code=0, phases=phases)
