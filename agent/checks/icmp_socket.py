"""ICMP sockets of the icmp check: unprivileged datagram sockets, one per run, or one raw
socket per family shared by the runs in flight, and the echo requests sent on them.

Linux lets a process send pings without privileges through ICMP datagram sockets when one of
its groups is inside `net.ipv4.ping_group_range` (the range covers ICMPv6 too); the kernel
then fills in the identifier and hands each socket only its own replies. Without that, root
(or CAP_NET_RAW) opens a raw socket, which sees every ICMP packet of the host: replies are
matched to runs on identifier, sequence number and a random token in the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
PROTOCOL: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
_SOL_RAW, _ICMP_FILTER, _ICMP6_FILTER = 255, 1, 1  # <linux/icmp.h>, <netinet/icmp6.h>
_RAW_BUFFER = 4 * 1024 * 1024
_RECEIVE = 65535


class IcmpUnavailable(OSError):
    """Neither an unprivileged ICMP socket nor a raw one may be opened here."""


@dataclass
class PingRun:
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
        return socket.socket(family, socket.SOCK_DGRAM, PROTOCOL[family])
    except PermissionError:
        return None


def open_raw(family: int) -> socket.socket:
    """A raw ICMP socket for `family` that receives echo replies only (where the kernel
    filters).

    Raises:
        IcmpUnavailable: no raw socket may be opened either; the message says why.
    """
    try:
        sock = socket.socket(family, socket.SOCK_RAW, PROTOCOL[family])
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


class SharedRaw:
    """The one raw socket of a family on an event loop, shared by the runs in flight.

    A raw ICMP socket gets a copy of every ICMP packet of the host: one socket per run would
    make each reply wake every run in flight, a cost that grows with the square of the runs
    in flight and tips an agent over as soon as it falls behind.
    """

    def __init__(self, family: int, loop: asyncio.AbstractEventLoop) -> None:
        self.family = family
        self.sock = open_raw(family)
        self.runs: dict[int, PingRun] = {}
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

    def register(self, run: PingRun) -> int:
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


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, SharedRaw]] = (
    weakref.WeakKeyDictionary()
)


def shared_raw(family: int) -> SharedRaw:
    """The running loop's shared raw socket for `family`, opened on first use.

    Raises:
        IcmpUnavailable: no raw socket may be opened.
    """
    loop = asyncio.get_running_loop()
    sockets = _SHARED.setdefault(loop, {})
    if family not in sockets:
        sockets[family] = SharedRaw(family, loop)
    return sockets[family]
