"""The icmp check: echo requests to a host, judged on packet loss and round-trip time."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent.checks.fields import integer, required_text, text, threshold
from agent.checks.icmp_socket import (
    PROTOCOL,
    IcmpUnavailable,
    PingRun,
    SharedRaw,
    echo_request,
    open_datagram,
    shared_raw,
)
from agent.checks.outcome import Verdict, judge
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError
from agent.expressions.celvars import RTT_KEYS, icmp_context
from schemas.checks import ping_host
from schemas.durations import parse_duration

_FAMILIES: dict[str, int] = {"Any": socket.AF_UNSPEC, "V4": socket.AF_INET, "V6": socket.AF_INET6}
_TOKEN = 8  # bytes of the payload that tell this run's replies from others'


@dataclass(frozen=True)
class PingSpec:
    """The fields of an icmp check."""

    host: str
    count: int
    interval_s: float
    size: int
    family: int
    loss_threshold: int | None
    threshold_ms: int | None
    timeout_s: float

    @classmethod
    def parse(cls, check: Mapping[str, Any]) -> PingSpec:
        """Read the check's fields.

        Raises:
            ValueError: a field is missing or has the wrong type or range.
        """
        version = text(check, "ipVersion", "Any") or "Any"
        if version not in _FAMILIES:
            raise ValueError(f"field 'ipVersion' must be Any, V4 or V6, got {version!r}")
        count = integer(check, "packetCount")
        size = integer(check, "packetSize")
        interval = parse_duration(text(check, "interval", "1s") or "1s")
        return cls(
            host=ping_host(required_text(check, "endpoint")),
            count=3 if count is None else max(1, count),
            interval_s=interval,
            size=56 if size is None else max(0, size),
            family=_FAMILIES[version],
            loss_threshold=integer(check, "packetLossThreshold"),
            threshold_ms=threshold(check),
            timeout_s=(integer(check, "timeout_ms") or 10_000) / 1000,
        )


async def _address(spec: PingSpec) -> tuple[int, str]:
    with contextlib.suppress(ValueError):  # a literal address needs no resolver thread
        literal = ipaddress.ip_address(spec.host.strip("[]"))
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        if spec.family in (socket.AF_UNSPEC, family):
            return family, str(literal)
        wanted = "IPv4" if spec.family == socket.AF_INET else "IPv6"
        raise LookupError(f"{spec.host} is not an {wanted} address (ipVersion)")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(spec.host, None, family=spec.family, type=socket.SOCK_RAW)
    except socket.gaierror as error:
        raise LookupError(f"cannot resolve {spec.host}: {error.strerror}") from None
    for family, _, _, _, address in infos:
        if family in PROTOCOL:
            return family, str(address[0])
    raise LookupError(f"{spec.host} has no IPv4 or IPv6 address")


async def _ping(spec: PingSpec, family: int, address: str) -> PingRun:
    loop = asyncio.get_running_loop()
    token = secrets.token_bytes(min(_TOKEN, spec.size))
    payload = token + bytes(spec.size - len(token))
    run = PingRun(family, token, spec.count)
    deadline = time.perf_counter() + spec.timeout_s
    own = open_datagram(family)
    shared: SharedRaw | None = None
    if own is None:
        shared = shared_raw(family)
        ident, sock = shared.register(run), shared.sock
    else:
        ident, sock = 0, own  # the kernel sets a datagram socket's identifier itself
    try:
        if own is not None:
            own.setblocking(False)
            loop.add_reader(own.fileno(), run.receive, own)
        for seq in range(1, spec.count + 1):
            if seq > 1:
                await asyncio.sleep(spec.interval_s)
            if time.perf_counter() >= deadline:
                break
            run.sent[seq] = time.perf_counter()
            try:
                sock.sendto(echo_request(family, ident, seq, payload), (address, 0))
            except OSError as error:
                del run.sent[seq]
                if not run.sent:
                    reason = error.strerror or str(error)
                    raise OSError(error.errno, f"cannot ping {address}: {reason}") from None
        remaining = deadline - time.perf_counter()
        if len(run.rtts) < len(run.sent) and remaining > 0:
            # The packets that did not come back by the deadline are the loss.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.done.wait(), remaining)
    finally:
        if own is not None:
            loop.remove_reader(own.fileno())
            own.close()
        elif shared is not None:
            shared.release(ident)
    return run


def ping_verdict(
    spec: PingSpec,
    address: str,
    sent: int,
    rtts: list[float],
    elapsed_ms: float,
    check: Mapping[str, Any] | None = None,
) -> Verdict:
    """Judge a finished ping run.

    Args:
        spec: The check.
        address: The address pinged.
        sent: Echo requests sent.
        rtts: Round-trip times of the replies, in milliseconds.
        elapsed_ms: How long the run took.
        check: The check as served, for its `test` and `display` (None: neither).

    Returns:
        "fail" when nothing came back, the loss is over `packetLossThreshold`, the
        average round trip over `thresholdMillis` or the `test` is false, else "pass"
        ("error" for a broken expression); the packet counts and round-trip statistics
        as phases either way.
    """
    received = len(rtts)
    loss = round(100 * (sent - received) / sent, 3) if sent else 100.0
    phases: dict[str, Any] = {
        "total_ms": round(elapsed_ms, 3),
        "packets_sent": sent,
        "packets_received": received,
        "packet_loss_percent": loss,
    }
    summary = f"{received}/{sent} replies from {address} ({loss:g}% loss)"
    if rtts:
        phases["rtt_min_ms"] = round(min(rtts), 3)
        phases["rtt_avg_ms"] = round(sum(rtts) / received, 3)
        phases["rtt_max_ms"] = round(max(rtts), 3)
        summary += (
            f", rtt min/avg/max {phases['rtt_min_ms']:.3f}/{phases['rtt_avg_ms']:.3f}/"
            f"{phases['rtt_max_ms']:.3f} ms"
        )
    failures: list[str] = []
    if sent < spec.count:
        # The requests that did not fit before the timeout are a mistake of the check, not loss.
        failures.append(
            f"only {sent} of packetCount {spec.count} requests were sent before the timeout "
            f"({spec.timeout_s:g}s); lower packetCount or interval ({spec.interval_s:g}s)"
        )
    if not received:
        failures.append(f"no reply: {summary}")
    elif spec.loss_threshold is not None and loss > spec.loss_threshold:
        failures.append(f"{summary}: loss over packetLossThreshold {spec.loss_threshold}%")
    if rtts and spec.threshold_ms is not None and phases["rtt_avg_ms"] > spec.threshold_ms:
        failures.append(
            f"average rtt {phases['rtt_avg_ms']:.3f}ms is over thresholdMillis {spec.threshold_ms}"
        )
    if check is not None:
        data = {  # what `display.template` looks up: the CEL variables' names and values
            "packetsSent": sent,
            "packetsReceived": received,
            "packetLoss": loss,
            "rtt": {k: timedelta(milliseconds=phases.get(f"rtt_{k}_ms", 0.0)) for k in RTT_KEYS},
            "elapsed": timedelta(milliseconds=elapsed_ms),
        }
        try:
            shown = apply_rules(check, failures, icmp_context(phases, elapsed_ms), data)
        except CelError as error:
            return Verdict("error", str(error), phases=phases)
        summary = shown if shown is not None else summary
    return judge(failures, summary, phases=phases)


async def check_icmp(check: Mapping[str, Any]) -> Verdict:
    """Ping the check's `endpoint` and judge loss and round-trip time.

    Args:
        check: The check as served (endpoint, packetCount, interval, packetSize, ipVersion,
            packetLossThreshold, thresholdMillis, timeout_ms).

    Returns:
        "pass"; "fail" when no reply came back, the loss is over `packetLossThreshold` or
        the average round trip over `thresholdMillis`; "error" when the host does not
        resolve or no ICMP socket may be opened. Phases carry total_ms, packets_sent,
        packets_received, packet_loss_percent and rtt_min_ms/rtt_avg_ms/rtt_max_ms.
    """
    spec = PingSpec.parse(check)
    start = time.perf_counter()
    try:
        family, address = await _address(spec)
    except LookupError as error:
        return Verdict("fail", str(error))
    try:
        run = await _ping(spec, family, address)
    except IcmpUnavailable:
        raise
    except OSError as error:  # the first request could not leave: unreachable from here
        return Verdict("fail", error.strerror or str(error))
    elapsed_ms = (time.perf_counter() - start) * 1000
    rtts = list(run.rtts.values())
    return ping_verdict(spec, address, len(run.sent), rtts, elapsed_ms, check)
