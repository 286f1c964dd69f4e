"""The DNS check: a query whose answers are counted and compared."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.rdatatype
import dns.resolver

from agent.checks.fields import integer, items, required_text, text, threshold
from agent.checks.outcome import Verdict, judge, over_threshold

DEFAULT_PORT = 53
BACKSTOP_SECONDS = 1.0
_TEXT_TYPES = {dns.rdatatype.TXT, dns.rdatatype.SPF}


def _resolver(server: str | None, port: int) -> dns.asyncresolver.Resolver:
    if server is None:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server]
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

    Args:
        check: The check as served (query, querytype, server, port, minrecords,
            exactreply, thresholdMillis, timeout_ms).

    Returns:
        "pass"; "fail" on NXDOMAIN, no answer, a failing server, too few records,
        answers other than `exactreply`, or slower than `thresholdMillis`.

    Raises:
        TimeoutError: no answer within the check's timeout.
    """
    query = required_text(check, "query")
    rdtype = dns.rdatatype.from_text((text(check, "querytype") or "A").upper())
    qtype = dns.rdatatype.to_text(rdtype)
    resolver = _resolver(text(check, "server"), integer(check, "port") or DEFAULT_PORT)
    minimum = integer(check, "minrecords")
    wanted = {_expected(str(reply), rdtype) for reply in items(check, "exactreply")}
    limit = threshold(check)
    timeout_ms = integer(check, "timeout_ms")
    lifetime = None if timeout_ms is None else timeout_ms / 1000 + BACKSTOP_SECONDS
    start = time.perf_counter()
    try:
        answer = await resolver.resolve(query, rdtype, search=False, lifetime=lifetime)
    except dns.resolver.NXDOMAIN:
        return Verdict("fail", f"{query} {qtype}: NXDOMAIN, the name does not exist")
    except dns.resolver.NoAnswer:
        return Verdict("fail", f"{query} {qtype}: no answer, the name has no {qtype} records")
    except dns.resolver.NoNameservers as error:
        return Verdict("fail", f"{query} {qtype}: no server gave an answer ({error})")
    except dns.exception.Timeout as error:
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
