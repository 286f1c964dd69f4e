"""The icmp check: echo requests to a host, judged on packet loss and round-trip time.

Linux lets a process send pings without privileges through ICMP datagram sockets when one of
its groups is inside `net.ipv4.ping_group_range` (the range covers ICMPv6 too); the kernel
then fills in the identifier and hands each socket only its own replies, so each run has a
socket of its own. Without that, root (or CAP_NET_RAW) opens a raw socket, which sees every
ICMP packet of the host: all runs share one per family, and replies are matched to runs on
identifier, sequence number and a random token in the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import socket
import struct
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from celpy import celtypes

from agent.checks.fields import integer, required_text, text, threshold
from agent.checks.outcome import Verdict, judge
from agent.checks.rules import apply_rules
from agent.expressions.cel import CelError
from schemas.durations import parse_duration

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTOCOL: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
_FAMILIES: dict[str, int] = {"Any": socket.AF_UNSPEC, "V4": socket.AF_INET, "V6": socket.AF_INET6}
_SOL_RAW, _ICMP_FILTER, _ICMP6_FILTER = 255, 1, 1  # <linux/icmp.h>, <netinet/icmp6.h>
_RAW_BUFFER = 4 * 1024 * 1024
_TOKEN = 8  # bytes of the payload that tell this run's replies from others'
_RECEIVE = 65535


class IcmpUnavailable(OSError):
    """Neither an unprivileged ICMP socket nor a raw one may be opened here."""


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
            host=required_text(check, "endpoint"),
            count=3 if count is None else max(1, count),
            interval_s=interval,
            size=56 if size is None else max(0, size),
            family=_FAMILIES[version],
            loss_threshold=integer(check, "packetLossThreshold"),
            threshold_ms=threshold(check),
            timeout_s=(integer(check, "timeout_ms") or 10_000) / 1000,
        )


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ICMP messages."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request message (the kernel fills in ICMPv6 checksums itself)."""
    header = struct.pack("!BBHHH", _ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return header + payload
    total = checksum(header + payload)
    return struct.pack("!BBHHH", _ECHO_REQUEST[family], 0, total, ident, seq) + payload


def _group_range() -> str:
    try:
        return " ".join(PING_GROUP_RANGE.read_text().split())
    except OSError:
        return "unreadable"


def unavailable_message(groups: list[int], group_range: str, euid: int) -> str:
    """Why no ICMP socket could be opened, naming what is missing for each kind.

    Args:
        groups: The process's group ids.
        group_range: The value of net.ipv4.ping_group_range ("1 0" means nobody).
        euid: The effective user id.
    """
    shown = ", ".join(str(g) for g in sorted(set(groups)))
    return (
        "cannot open an ICMP socket: unprivileged ICMP is not allowed for this process "
        f"(its groups {shown} are outside net.ipv4.ping_group_range = {group_range}; "
        "allow one with `sysctl net.ipv4.ping_group_range`) and raw ICMP sockets need root "
        f"or CAP_NET_RAW (running as uid {euid})"
    )


def open_datagram(family: int) -> socket.socket | None:
    """An unprivileged ICMP socket for `family`, or None when the kernel does not allow one."""
    try:
        return socket.socket(family, socket.SOCK_DGRAM, _PROTOCOL[family])
    except PermissionError:
        return None


def open_raw(family: int) -> socket.socket:
    """A raw ICMP socket for `family` that receives echo replies only (where the kernel
    filters).

    Raises:
        IcmpUnavailable: no raw socket may be opened either; the message says why.
    """
    try:
        sock = socket.socket(family, socket.SOCK_RAW, _PROTOCOL[family])
    except PermissionError:
        groups = [os.getegid(), *os.getgroups()]
        raise IcmpUnavailable(unavailable_message(groups, _group_range(), os.geteuid())) from None
    with contextlib.suppress(OSError):  # a kernel without the filter delivers everything
        if family == socket.AF_INET:
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~1 & 0xFFFFFFFF))
        else:
            blocked = [0xFFFFFFFF] * 8
            blocked[_ECHO_REPLY[family] >> 5] &= ~(1 << (_ECHO_REPLY[family] & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))
    with contextlib.suppress(OSError):
        # Every run's replies queue here: room for a few seconds of them at hundreds of pings
        # a second, so a busy event loop loses none (the kernel caps it at net.core.rmem_max).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RAW_BUFFER)
    sock.setblocking(False)
    return sock


class _SharedRaw:
    """The one raw socket of a family on an event loop, shared by the runs in flight.

    A raw ICMP socket gets a copy of every ICMP packet of the host: one socket per run would
    make each reply wake every run in flight, a cost that grows with the square of the runs
    in flight and tips an agent over as soon as it falls behind.
    """

    def __init__(self, family: int, loop: asyncio.AbstractEventLoop) -> None:
        self.family = family
        self.sock = open_raw(family)
        self.runs: dict[int, _Run] = {}
        self._loop = loop
        self._next = secrets.randbelow(0xFFFF)
        loop.add_reader(self.sock.fileno(), self._receive)

    def release(self, ident: int) -> None:
        """Forget a finished run; close the socket when no run is left in flight."""
        self.runs.pop(ident, None)
        if not self.runs:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            sockets = _SHARED.get(self._loop, {})
            if sockets.get(self.family) is self:
                del sockets[self.family]

    def register(self, run: _Run) -> int:
        """Give a run an identifier no other run in flight has."""
        for _ in range(0x10000):
            self._next = self._next % 0xFFFF + 1
            if self._next not in self.runs:
                self.runs[self._next] = run
                return self._next
        raise OSError("65535 pings in flight on one socket")

    def _receive(self) -> None:
        while True:
            try:
                packet = self.sock.recv(_RECEIVE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket; the lost packet shows as loss
            if self.family == socket.AF_INET and packet:
                packet = packet[(packet[0] & 0x0F) * 4 :]  # IPv4 raw sockets see the IP header
            if len(packet) >= 8:
                run = self.runs.get(struct.unpack("!H", packet[4:6])[0])
                if run is not None:
                    run.reply(packet, time.perf_counter())


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _SharedRaw]] = (
    weakref.WeakKeyDictionary()
)


def shared_raw(family: int) -> _SharedRaw:
    """The running loop's shared raw socket for `family`, opened on first use.

    Raises:
        IcmpUnavailable: no raw socket may be opened.
    """
    loop = asyncio.get_running_loop()
    sockets = _SHARED.setdefault(loop, {})
    if family not in sockets:
        sockets[family] = _SharedRaw(family, loop)
    return sockets[family]


@dataclass
class _Run:
    """Echo requests in flight and the replies that came back, by sequence number."""

    family: int
    token: bytes
    count: int
    sent: dict[int, float] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def receive(self, sock: socket.socket) -> None:
        """Read every packet waiting on a run's own datagram socket."""
        while True:
            try:
                packet = sock.recv(_RECEIVE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket; the lost packet shows as loss
            self.reply(packet, time.perf_counter())

    def reply(self, packet: bytes, arrived: float) -> None:
        """Keep an ICMP message (no IP header) if it answers one of this run's requests."""
        if len(packet) < 8:
            return
        kind, _, _, _, seq = struct.unpack("!BBHHH", packet[:8])
        if kind != _ECHO_REPLY[self.family] or seq not in self.sent or seq in self.rtts:
            return
        if self.token and packet[8 : 8 + len(self.token)] != self.token:
            return
        self.rtts[seq] = (arrived - self.sent[seq]) * 1000
        if len(self.rtts) == self.count:
            self.done.set()


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
        if family in _PROTOCOL:
            return family, str(address[0])
    raise LookupError(f"{spec.host} has no IPv4 or IPv6 address")


async def _ping(spec: PingSpec, family: int, address: str) -> _Run:
    loop = asyncio.get_running_loop()
    token = secrets.token_bytes(min(_TOKEN, spec.size))
    payload = token + bytes(spec.size - len(token))
    run = _Run(family, token, spec.count)
    deadline = time.perf_counter() + spec.timeout_s
    own = open_datagram(family)
    shared: _SharedRaw | None = None
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
                    raise OSError(error.errno, f"cannot ping {address}: {error.strerror}") from None
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


def _variables(phases: Mapping[str, Any], elapsed_ms: float) -> dict[str, Any]:
    """The CEL variables of an icmp check: round trips as durations, loss in percent."""
    rtt = {
        key: celtypes.DurationType(timedelta(milliseconds=phases.get(f"rtt_{key}_ms", 0.0)))
        for key in ("min", "avg", "max")
    }
    return {
        "elapsed": celtypes.DurationType(timedelta(milliseconds=elapsed_ms)),
        "packetsSent": celtypes.IntType(phases["packets_sent"]),
        "packetsReceived": celtypes.IntType(phases["packets_received"]),
        "packetLoss": celtypes.DoubleType(phases["packet_loss_percent"]),
        "rtt": celtypes.MapType({celtypes.StringType(k): v for k, v in rtt.items()}),
    }


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
    if not received:
        failures.append(f"no reply: {summary}")
    elif spec.loss_threshold is not None and loss > spec.loss_threshold:
        failures.append(f"{summary}: loss over packetLossThreshold {spec.loss_threshold}%")
    if rtts and spec.threshold_ms is not None and phases["rtt_avg_ms"] > spec.threshold_ms:
        failures.append(
            f"average rtt {phases['rtt_avg_ms']:.3f}ms is over thresholdMillis {spec.threshold_ms}"
        )
    if check is not None:
        data = {k: v for k, v in phases.items() if k != "total_ms"}
        try:
            shown = apply_rules(check, failures, _variables(phases, elapsed_ms), data)
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
    run = await _ping(spec, family, address)
    elapsed_ms = (time.perf_counter() - start) * 1000
    rtts = list(run.rtts.values())
    return ping_verdict(spec, address, len(run.sent), rtts, elapsed_ms, check)
