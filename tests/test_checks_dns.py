"""DNS checks against a tiny DNS responder on 127.0.0.1 built with dnspython's message API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from agent.checks import CheckOutcome, ClientPool, run_check
from schemas.checks import DnsCheck

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ZONE: dict[tuple[str, str], list[str]] = {
    ("www.test.", "A"): ["127.0.0.10", "127.0.0.11"],
    ("mail.test.", "MX"): ["10 mx1.test.", "20 mx2.test."],
    ("mail.test.", "TXT"): ['"v=spf1 -all"'],
    ("slow.test.", "A"): ["127.0.0.12"],
}
EXISTING = {name for name, _ in ZONE} | {"hang.test.", "servfail.test."}
SLOW_SECONDS = 0.05
# How far past its timeout a run that times out may end: the timeout bounds the whole query
# (a second more was the dispatcher's backstop, which used to end such runs).
LATE_MS = 400
# Replies a resolver must throw away: not parseable, another id, no QR flag.
INVALID: dict[str, Callable[[dns.message.Message], bytes]] = {
    "garbage.test.": lambda response: b"\x00\x01garbage",
    "wrongid.test.": lambda response: (
        ((response.id + 1) & 0xFFFF).to_bytes(2, "big") + response.to_wire()[2:]
    ),
    "noqr.test.": lambda response: _without_qr(response).to_wire(),
}


def _without_qr(response: dns.message.Message) -> dns.message.Message:
    response.flags &= ~dns.flags.QR
    return response


class Responder(asyncio.DatagramProtocol):
    """Answers from ZONE; NXDOMAIN for unknown names, SERVFAIL, a late and a missing answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name == "hang.test.":
            return
        if name in INVALID:
            self.transport.sendto(INVALID[name](response), addr)
            return
        if name == "servfail.test.":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in EXISTING:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in ZONE:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *ZONE[name, rdtype]))
        wire = response.to_wire()
        if name == "slow.test.":
            # A lower bound on the answer time: it is sent no sooner than SLOW_SECONDS.
            asyncio.get_running_loop().call_later(SLOW_SECONDS, self.transport.sendto, wire, addr)
        else:
            self.transport.sendto(wire, addr)


def run_dns(**fields: Any) -> CheckOutcome:
    async def main() -> CheckOutcome:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        check = {"name": "dns", "type": "dns", "timeout_ms": 5000, "server": "127.0.0.1"}
        try:
            async with ClientPool(size=1, trust_env=False) as pool:
                return await run_check(check | {"port": port} | fields, pool, lambda: NOW)
        finally:
            transport.close()

    return asyncio.run(main())


def test_enough_a_records_pass() -> None:
    outcome = run_dns(query="www.test", minrecords=2)
    assert (outcome.status, outcome.message) == ("pass", "2 A records: 127.0.0.10, 127.0.0.11")
    assert outcome.phases is not None
    assert set(outcome.phases) == {"total_ms"}


def test_too_few_records_fail() -> None:
    outcome = run_dns(query="www.test", minrecords=3)
    assert (outcome.status, outcome.message) == ("fail", "got 2 A records, minrecords is 3")


def test_an_exact_reply_passes_in_any_order() -> None:
    outcome = run_dns(query="www.test", exactreply=["127.0.0.11", "127.0.0.10"])
    assert outcome.status == "pass"


def test_a_different_reply_fails_naming_the_difference() -> None:
    outcome = run_dns(query="www.test", exactreply=["127.0.0.10", "127.0.0.99"])
    assert outcome.status == "fail"
    assert outcome.message == (
        "answers differ from exactreply: missing 127.0.0.99; unexpected 127.0.0.11"
    )


@pytest.mark.parametrize(
    ("querytype", "reply"),
    [
        ("MX", ["10 mx1.test.", "20 MX2.test"]),
        ("mx", ["10 mx1.test", "20 mx2.test"]),
        ("MX", ["mx1.test. 10", "mx2.test. 20"]),  # canary-checker's order: host preference
        ("TXT", ["v=spf1 -all"]),
        ("TXT", ['"v=spf1 -all"']),
    ],
)
def test_mx_and_txt_replies_compare_by_text(querytype: str, reply: list[str]) -> None:
    outcome = run_dns(query="mail.test", querytype=querytype, exactreply=reply, minrecords=1)
    assert (outcome.status, outcome.code) == ("pass", None)


def test_nxdomain_fails() -> None:
    outcome = run_dns(query="missing.test")
    assert (outcome.status, outcome.message) == (
        "fail",
        "missing.test A: NXDOMAIN, the name does not exist",
    )


def test_no_answer_fails() -> None:
    outcome = run_dns(query="www.test", querytype="MX")
    assert (outcome.status, outcome.message) == (
        "fail",
        "www.test MX: no answer, the name has no MX records",
    )


def test_a_failing_server_fails() -> None:
    outcome = run_dns(query="servfail.test")
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith("servfail.test A: no server gave an answer (")
    assert "SERVFAIL" in outcome.message


def test_slower_than_the_threshold_fails() -> None:
    outcome = run_dns(query="slow.test", thresholdMillis=10)
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith("took ")
    assert outcome.message.endswith("ms, over thresholdMillis 10")


def test_no_answer_in_time_is_a_timeout_error_at_the_timeout() -> None:
    outcome = run_dns(query="hang.test", timeout_ms=200)
    assert (outcome.status, outcome.message) == ("error", "timed out after 200ms")
    assert outcome.duration_ms < 200 + LATE_MS


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("garbage.test", "unparseable: The DNS packet passed to from_wire() is too short."),
        ("wrongid.test", "another id than the query's"),
        ("noqr.test", "no QR flag: not a response"),
    ],
)
def test_replies_the_resolver_throws_away_are_named(query: str, reason: str) -> None:
    outcome = run_dns(query=query, timeout_ms=300)
    assert (outcome.status, outcome.message) == (
        "fail",
        f"{query} A: no valid answer in 300ms: the server at 127.0.0.1 answered, but not "
        f"with a valid reply to this query ({reason})",
    )
    assert outcome.duration_ms < 300 + LATE_MS


def test_a_server_given_by_name_is_resolved() -> None:
    """canary-checker dials `server` as given, so a host name works there too."""
    outcome = run_dns(query="www.test", server="localhost", minrecords=2)
    assert outcome.status == "pass", outcome.message


def test_a_server_name_that_does_not_resolve_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)  # asyncio's loop resolves through it
    outcome = run_dns(query="www.test", server="resolver.invalid")
    assert (outcome.status, outcome.message) == (
        "fail",
        "www.test A: cannot resolve the DNS server resolver.invalid (Name or service not known)",
    )


@pytest.mark.parametrize(
    ("server", "problems"),
    [
        ("1.1.1.1", []),
        ("2606:4700:4700::1111", []),
        ("[::1]", []),
        ("dns.example.com", []),
        ("1.1.1.1:53", ["'1.1.1.1:53' is not an IP address or host name (a port goes in `port`)"]),
        (
            "udp://1.1.1.1",
            ["'udp://1.1.1.1' is not an IP address or host name (a port goes in `port`)"],
        ),
    ],
)
def test_validate_takes_an_address_or_a_host_name_as_server(
    server: str, problems: list[str]
) -> None:
    check = DnsCheck.model_validate({"name": "mx", "query": "example.com", "server": server})
    assert [message for _, message in check.problems()] == problems


def test_an_unknown_query_type_is_an_error() -> None:
    outcome = run_dns(query="www.test", querytype="BOGUS")
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("UnknownRdatatype")
