"""The DNS check: a query whose answers are counted and compared."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

import dns._asyncbackend  # the bases dns.asyncbackend re-exports (implicitly, so not for mypy)
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rdata
import dns.rdatatype
import dns.resolver

from agent.checks.fields import integer, items, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold
from schemas.checks import DEFAULT_TIMEOUT_SECONDS

DEFAULT_PORT = 53
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
_TEXT_TYPES = {dns.rdatatype.TXT, dns.rdatatype.SPF}


class _Datagrams(dns._asyncbackend.DatagramSocket):
    """A resolver's UDP socket that notes the replies the resolver throws away.

    dnspython skips a datagram that does not parse or does not answer its query (another id,
    no QR flag, another question) and waits on, as it should: a forged packet must not end a
    query. But when nothing valid follows, the check would only say "timed out" about a
    server that did answer.
    """

    def __init__(self, inner: Any, rejected: list[str]) -> None:
        super().__init__(inner.family, inner.type)
        self._inner = inner
        self._rejected = rejected
        self._query = b""

    async def sendto(self, what: bytes, destination: Any, timeout: float | None) -> int:
        self._query = what
        sent: int = await self._inner.sendto(what, destination, timeout)
        return sent

    async def recvfrom(self, size: int, timeout: float | None) -> tuple[bytes, Any]:
        wire, sender = await self._inner.recvfrom(size, timeout)
        reason = _not_a_reply(self._query, wire)
        if reason is not None:
            self._rejected.append(
                f"the server at {sender[0]} answered, but not with a valid reply to this "
                f"query ({reason})"
            )
        return wire, sender

    async def close(self) -> None:
        await self._inner.close()

    async def getpeername(self) -> Any:
        return await self._inner.getpeername()

    async def getsockname(self) -> Any:
        return await self._inner.getsockname()


class _Watching(dns._asyncbackend.Backend):
    """The asyncio backend, its UDP sockets wrapped in `_Datagrams`."""

    def __init__(self) -> None:
        self._inner: Any = dns.asyncbackend.get_backend("asyncio")
        self.rejected: list[str] = []

    def name(self) -> str:
        return "asyncio"

    async def make_socket(self, af: int, socktype: int, *args: Any, **kwargs: Any) -> Any:
        sock = await self._inner.make_socket(af, socktype, *args, **kwargs)
        return _Datagrams(sock, self.rejected) if socktype == socket.SOCK_DGRAM else sock

    def datagram_connection_required(self) -> bool:
        required: bool = self._inner.datagram_connection_required()
        return required

    async def sleep(self, interval: float) -> None:
        await self._inner.sleep(interval)

    def get_transport_class(self) -> Any:
        return self._inner.get_transport_class()

    async def wait_for(self, awaitable: Any, timeout: float | None) -> Any:
        return await self._inner.wait_for(awaitable, timeout)


def _not_a_reply(query_wire: bytes, wire: bytes) -> str | None:
    """Why `wire` is no reply to the query sent as `query_wire`, or None if it is one."""
    try:
        reply = dns.message.from_wire(wire)
    except Exception as error:  # dnspython's parse raises many types
        return f"unparseable: {str(error) or type(error).__name__}"
    query = dns.message.from_wire(query_wire)
    if not reply.flags & dns.flags.QR:
        return "no QR flag: not a response"
    if reply.id != query.id:
        return "another id than the query's"
    if not query.is_response(reply):
        return "the answer to another question"
    return None


async def _nameservers(server: str, port: int, deadline: float) -> list[str]:
    """The addresses of `server`: itself if it is an IP address, else what its name resolves
    to (canary-checker dials the server by name).

    Raises:
        ValueError: `server` is neither an IP address nor a host name.
        socket.gaierror: the name does not resolve.
        TimeoutError: not resolved by the deadline.
    """
    address = server.removeprefix("[").removesuffix("]")
    try:
        return [str(ipaddress.ip_address(address))]
    except ValueError:
        if not _HOST_NAME.fullmatch(server):  # `validate` refuses these too; never looked up
            raise ValueError(f"server {server!r} is not an IP address or host name") from None
    async with asyncio.timeout_at(deadline):
        infos = await asyncio.get_running_loop().getaddrinfo(server, port, type=socket.SOCK_DGRAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _resolver(nameservers: list[str] | None, port: int) -> dns.asyncresolver.Resolver:
    if nameservers is None:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = list(nameservers)
    resolver.port = port
    return resolver


def answer_text(rdata: dns.rdata.Rdata) -> str:
    """An answer as the text a user writes in `exactreply`.

    TXT strings are joined without quotes; in other types each name loses its trailing
    dot and letters are lower-cased (`10 mail.example.com`).
    """
    if rdata.rdtype in _TEXT_TYPES:
        strings: tuple[bytes, ...] = getattr(rdata, "strings", ())
        return b"".join(strings).decode("utf-8", errors="replace")
    return normalize(rdata.to_text())


def normalize(reply: str) -> str:
    """An expected reply in the form `answer_text` gives (quotes of TXT kept as written)."""
    return " ".join(token.rstrip(".") for token in reply.lower().split())


def _expected(reply: str, rdtype: dns.rdatatype.RdataType) -> str:
    if rdtype in _TEXT_TYPES:
        quoted = len(reply) >= 2 and reply[0] == reply[-1] == '"'
        return reply[1:-1] if quoted else reply
    tokens = normalize(reply).split()
    if rdtype == dns.rdatatype.MX and len(tokens) == 2 and tokens[1].isdigit():
        # canary-checker writes MX replies as "host preference" ("smtp.google.com. 10").
        tokens.reverse()
    return " ".join(tokens)


def _exact_failures(answers: set[str], expected: set[str]) -> list[str]:
    if answers == expected:
        return []
    missing = ", ".join(sorted(expected - answers)) or "none"
    extra = ", ".join(sorted(answers - expected)) or "none"
    return [f"answers differ from exactreply: missing {missing}; unexpected {extra}"]


async def check_dns(check: Mapping[str, Any]) -> Verdict:
    """Resolve the check's `query` and judge the answers.

    The check's timeout bounds the whole of it: resolving the server's name and every
    attempt of the query.

    Args:
        check: The check as served (query, querytype, server, port, minrecords,
            exactreply, thresholdMillis, timeout_ms).

    Returns:
        "pass"; "fail" on NXDOMAIN, no answer, a failing server, a server name that does
        not resolve, a server that answered only with replies that were not valid, too few
        records, answers other than `exactreply`, or slower than `thresholdMillis`.

    Raises:
        TimeoutError: no answer within the check's timeout.
    """
    query = required_text(check, "query")
    rdtype = dns.rdatatype.from_text((text(check, "querytype") or "A").upper())
    qtype = dns.rdatatype.to_text(rdtype)
    server = text(check, "server")
    port = integer(check, "port") or DEFAULT_PORT
    minimum = integer(check, "minrecords")
    wanted = {_expected(str(reply), rdtype) for reply in items(check, "exactreply")}
    limit = threshold(check)
    timeout_ms = integer(check, "timeout_ms")
    seconds = DEFAULT_TIMEOUT_SECONDS if timeout_ms is None else timeout_ms / 1000
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    start = time.perf_counter()
    nameservers = None
    if server is not None:
        try:
            nameservers = await _nameservers(server, port, deadline)
        except socket.gaierror as error:
            return Verdict(
                "fail",
                f"{query} {qtype}: cannot resolve the DNS server {server} ({error.strerror})",
            )
    backend = _Watching()
    try:
        # dnspython's lifetime ends its attempts, but not the back-off sleep between two
        # rounds of them, which can pass it: the deadline holds for that too.
        async with asyncio.timeout_at(deadline):
            answer = await _resolver(nameservers, port).resolve(
                query,
                rdtype,
                search=False,
                lifetime=max(deadline - loop.time(), 0.001),
                backend=backend,
            )
    except dns.resolver.NXDOMAIN:
        return Verdict("fail", f"{query} {qtype}: NXDOMAIN, the name does not exist")
    except dns.resolver.NoAnswer:
        return Verdict("fail", f"{query} {qtype}: no answer, the name has no {qtype} records")
    except dns.resolver.NoNameservers as error:
        return Verdict("fail", f"{query} {qtype}: no server gave an answer ({error})")
    except (dns.exception.Timeout, TimeoutError) as error:
        if backend.rejected:
            shown = "; ".join(dict.fromkeys(backend.rejected))
            return Verdict(
                "fail", f"{query} {qtype}: no valid answer in {seconds * 1000:.0f}ms: {shown}"
            )
        raise TimeoutError(str(error)) from error
    elapsed_ms = (time.perf_counter() - start) * 1000
    answers = sorted(answer_text(rdata) for rdata in answer)
    failures = []
    if minimum is not None and len(answers) < minimum:
        failures.append(f"got {len(answers)} {qtype} records, minrecords is {minimum}")
    if wanted:
        failures += _exact_failures(set(answers), wanted)
    failures += over_threshold(elapsed_ms, limit)
    message = f"{len(answers)} {qtype} records: " + ", ".join(answers)
    return judge(failures, message, phases={"total_ms": round(elapsed_ms, 3)})
