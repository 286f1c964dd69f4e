"""The Canary kind: synthetic HTTP, TCP, DNS and TLS checks and where they run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, PlainValidator, WithJsonSchema

from schemas.base import (
    API_VERSION,
    CANARY_CHECKER_API_VERSION,
    Duration,
    Metadata,
    Problem,
    StrictModel,
)
from schemas.durations import format_duration, parse_duration
from schemas.schedule import parse_schedule

CHECK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")
DEFAULT_TIMEOUT_SECONDS = 10.0

CheckName = Annotated[str, Field(pattern=CHECK_NAME_PATTERN)]


class ValueFrom(StrictModel):
    """Where a secret value comes from at serve time. It is never stored in git or DuckDB."""

    env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable of the control plane.",
    )


class Header(StrictModel):
    """One HTTP request header; `value` may contain `${env:NAME}` references."""

    name: str = Field(min_length=1)
    value: str | None = None
    valueFrom: ValueFrom | None = None

    def problems(self) -> Iterator[Problem]:
        if (self.value is None) == (self.valueFrom is None):
            yield ((), "set exactly one of 'value' and 'valueFrom'")


class TestExpression(StrictModel):
    """A CEL expression over `code`, `headers`, `content`, `json` and `elapsed`."""

    expr: str = Field(min_length=1)


class CheckBase(StrictModel):
    """Fields every check type shares."""

    name: CheckName
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = Field(
        default=None,
        description="Give up after this long. Default: 10s, or 90% of the schedule period "
        "when that is shorter. Must be shorter than the schedule period.",
    )
    thresholdMillis: int | None = Field(
        default=None, ge=1, description="Fail the check when it takes longer than this."
    )

    def problems(self) -> Iterator[Problem]:
        yield from ()


def _endpoint_problems(endpoint: str) -> Iterator[Problem]:
    match = _HOST_PORT.match(endpoint)
    if not match or not 0 < int(match.group(2)) < 65536:
        yield (("endpoint",), f"{endpoint!r} is not host:port (e.g. 'db.example.com:5432')")


def _publish_alias(schema: dict[str, Any]) -> None:
    properties = schema.get("properties", {})
    if "thresholdMillis" in properties:
        alias = dict(properties["thresholdMillis"])
        alias["description"] = "canary-checker's name for thresholdMillis."
        properties["maxResponseTime"] = alias


class HttpCheck(CheckBase):
    """An HTTP request whose status, latency and body are checked."""

    model_config = ConfigDict(json_schema_extra=_publish_alias)

    url: str = Field(pattern=r"^https?://\S+$", description="http:// or https:// URL.")
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: list[Header] = Field(default_factory=list)
    body: str | None = None
    responseCodes: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, description="Accepted status codes; empty means any 2xx."
    )
    thresholdMillis: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("thresholdMillis", "maxResponseTime"),
        description="Fail when slower than this (alias: maxResponseTime).",
    )
    followRedirects: bool = True
    test: TestExpression | None = None

    def problems(self) -> Iterator[Problem]:
        for index, header in enumerate(self.headers):
            for path, message in header.problems():
                yield (("headers", index, *path), message)


class TcpCheck(CheckBase):
    """A TCP connect to host:port."""

    endpoint: str

    def problems(self) -> Iterator[Problem]:
        yield from _endpoint_problems(self.endpoint)


class DnsCheck(CheckBase):
    """A DNS query whose answers are checked."""

    query: str = Field(min_length=1, description="The name to resolve.")
    querytype: Literal["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"] = "A"
    server: str | None = Field(default=None, description="Resolver address; default: system's.")
    port: int = Field(default=53, ge=1, le=65535)
    minrecords: int | None = Field(default=None, ge=0)
    exactreply: list[str] | None = Field(
        default=None, description="The answers must be exactly these (order ignored)."
    )


class TlsCheck(CheckBase):
    """A TLS handshake whose certificate expiry is checked."""

    endpoint: str
    serverName: str | None = Field(default=None, description="SNI name; default: the host.")
    maxSSLExpiry: int = Field(
        default=7, ge=0, description="Fail when the certificate expires within this many days."
    )

    def problems(self) -> Iterator[Problem]:
        yield from _endpoint_problems(self.endpoint)


POLICIES = ("any", "majority", "all")


def _check_policy(value: Any) -> str | dict[str, int]:
    if isinstance(value, str) and value in POLICIES:
        return value
    if isinstance(value, dict) and set(value) == {"count"}:
        count = value["count"]
        if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
            return {"count": count}
    raise ValueError("expected 'any', 'majority', 'all' or {count: N} with N >= 1")


IncidentPolicy = Annotated[
    str | dict[str, int],
    PlainValidator(_check_policy),
    WithJsonSchema(
        {
            "oneOf": [
                {"enum": list(POLICIES)},
                {
                    "type": "object",
                    "properties": {"count": {"type": "integer", "minimum": 1}},
                    "required": ["count"],
                    "additionalProperties": False,
                },
            ],
            "description": "How region verdicts combine into an incident.",
        }
    ),
]

CHECK_TYPES = ("http", "tcp", "dns", "tls")


class CanarySpec(StrictModel):
    """The checks of a canary, their schedule, where they run and how incidents open."""

    schedule: str = Field(
        default="@every 1m",
        description="'@every <duration>', a 5-field cron expression, or '@never'.",
    )
    agentSelector: list[str] | None = Field(
        default=None,
        description="Agent name globs; '!glob' excludes, 'local' is the control plane. "
        "Absent: the control plane only.",
    )
    incidentPolicy: IncidentPolicy = "majority"
    failureThreshold: int = Field(default=3, ge=1)
    successThreshold: int = Field(default=2, ge=1)
    http: list[HttpCheck] = Field(default_factory=list)
    tcp: list[TcpCheck] = Field(default_factory=list)
    dns: list[DnsCheck] = Field(default_factory=list)
    tls: list[TlsCheck] = Field(default_factory=list)

    def checks(self) -> Iterator[tuple[str, int, CheckBase]]:
        """Every check with its type and index in its list."""
        for check_type in CHECK_TYPES:
            checks: list[CheckBase] = getattr(self, check_type)
            for index, check in enumerate(checks):
                yield check_type, index, check

    def problems(self) -> Iterator[Problem]:
        period: float | None = None
        try:
            period = parse_schedule(self.schedule).period_seconds()
        except ValueError as error:
            yield (("schedule",), str(error))
        for pattern_index, pattern in enumerate(self.agentSelector or []):
            body = pattern[1:] if pattern.startswith("!") else pattern
            if not body.strip():
                yield (("agentSelector", pattern_index), "empty pattern")
        seen: dict[str, str] = {}
        any_check = False
        for check_type, index, check in self.checks():
            any_check = True
            where: tuple[str | int, ...] = (check_type, index)
            if check.name in seen:
                yield (
                    (*where, "name"),
                    f"check name {check.name!r} is already used by a {seen[check.name]} check",
                )
            seen[check.name] = check_type
            for path, message in check.problems():
                yield ((*where, *path), message)
            if check.timeout is not None and period is not None:
                timeout = parse_duration(check.timeout)
                if timeout >= period:
                    yield (
                        (*where, "timeout"),
                        f"timeout {check.timeout} must be shorter than the schedule period "
                        f"({format_duration(period)})",
                    )
        if not any_check:
            yield ((), "a canary needs at least one check (http, tcp, dns or tls)")


def effective_timeout(timeout: str | None, period: float | None) -> float:
    """The timeout a check runs with, in seconds: its own, else 10s capped at 90% of the
    schedule period."""
    if timeout is not None:
        return parse_duration(timeout)
    if period is None:
        return DEFAULT_TIMEOUT_SECONDS
    return min(DEFAULT_TIMEOUT_SECONDS, round(period * 0.9, 3))


class CanaryDocument(StrictModel):
    """A `kind: Canary` document (ours or canary-checker's apiVersion)."""

    apiVersion: Literal["canary-reconciler/v1", "canaries.flanksource.com/v1"] = API_VERSION
    kind: Literal["Canary"] = "Canary"
    metadata: Metadata
    spec: CanarySpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)


__all__ = ["CANARY_CHECKER_API_VERSION", "CanaryDocument", "CanarySpec", "effective_timeout"]
