"""Wire models of the agent protocol: the config an agent pulls and the results it posts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# `degraded`: the check passed but slower than its degraded threshold (counted as up, shown
# amber); see reconciler/core/outcomes.py for how each status counts.
ResultStatus = Literal["pass", "degraded", "fail", "error"]
# The most retries a check may make in one run (`retries` in a check spec, docs/canary.md).
MAX_RETRIES = 10


# Long polls of `GET /api/agent/targets?wait=SECONDS` (docs/agent-protocol.md): the longest
# wait a server holds, and the header by which it says it held one (older servers answer at
# once, without it, and the agent falls back to pulling every `--pull-interval`).
MAX_PULL_WAIT = 60.0
PULL_WAIT_HEADER = "X-Pull-Wait"


class WireModel(BaseModel):
    """Wire documents: unknown keys are rejected, values are coerced only where JSON must
    (numbers are `strict`: `true` or `"200"` is not a number here, as the protocol says)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Phases(WireModel):
    """Timing phases of a check in milliseconds, and an icmp check's packet counts."""

    connect_ms: float | None = Field(default=None, strict=True, ge=0)
    tls_ms: float | None = Field(default=None, strict=True, ge=0)
    first_byte_ms: float | None = Field(default=None, strict=True, ge=0)
    total_ms: float | None = Field(default=None, strict=True, ge=0)
    # icmp checks: what came back of the echo requests.
    packets_sent: int | None = Field(default=None, strict=True, ge=0)
    packets_received: int | None = Field(default=None, strict=True, ge=0)
    packet_loss_percent: float | None = Field(default=None, strict=True, ge=0, le=100)
    rtt_min_ms: float | None = Field(default=None, strict=True, ge=0)
    rtt_avg_ms: float | None = Field(default=None, strict=True, ge=0)
    rtt_max_ms: float | None = Field(default=None, strict=True, ge=0)
    # multihttp checks: how long each step took, in order.
    steps_ms: list[float] | None = Field(default=None, strict=True, max_length=10)
    # browser checks: navigation timing of the first page (from navigation start; connect_ms,
    # tls_ms and first_byte_ms above too) and how many console errors the page logged.
    dns_ms: float | None = Field(default=None, strict=True, ge=0)
    dom_content_loaded_ms: float | None = Field(default=None, strict=True, ge=0)
    load_ms: float | None = Field(default=None, strict=True, ge=0)
    console_errors: int | None = Field(default=None, strict=True, ge=0)
    # http (https) and tls checks: when the peer's certificate expires, Unix seconds
    # (`probe_ssl_earliest_cert_expiry` on the control plane's /metrics).
    cert_not_after: float | None = Field(default=None, strict=True, ge=0)


class ResultRow(WireModel):
    """One check run, as an agent reports it."""

    canary: str = Field(min_length=1, max_length=300, description="Derived canary id.")
    check: str = Field(min_length=1, max_length=128, description="Check name.")
    started_at: datetime = Field(description="RFC 3339 time the run started, with offset.")
    duration_ms: float = Field(strict=True, ge=0, le=86_400_000)
    status: ResultStatus
    retries: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=MAX_RETRIES,
        description="Retries this run made before its status.",
    )
    code: int | None = Field(
        default=None, strict=True, ge=0, le=999, description="HTTP status, if any."
    )
    message: str | None = Field(default=None, max_length=4096)
    phases: Phases | None = None


class ResultBatch(WireModel):
    """A POST /api/agent/results body. Rows are validated one by one by the server."""

    results: list[Any]
    sent_at: datetime | None = Field(
        default=None, description="The agent's clock when it sent the batch (skew detection)."
    )

    @field_validator("sent_at")
    @classmethod
    def _sent_at_has_an_offset(cls, value: datetime | None) -> datetime | None:
        """Refuse a `sent_at` without a UTC offset (`2026-12-06T10:00:00`, `2026-12-06`):
        it names no instant, so the agent's clock cannot be compared with the server's."""
        if value is not None and value.tzinfo is None:
            raise ValueError(
                "sent_at must be an RFC 3339 time with a UTC offset "
                "(e.g. 2026-12-06T10:00:00Z or +01:00); this one has none"
            )
        return value


class CheckSpec(BaseModel):
    """One check as served to an agent: its name, type and every field of its spec."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: Literal["http", "tcp", "dns", "tls", "icmp", "multihttp", "grpc"]
    timeout_ms: int


class DerivedCanarySpec(WireModel):
    """One derived canary as served to its agent."""

    id: str
    schedule: str
    checks: list[CheckSpec]


class AgentTargets(WireModel):
    """The GET /api/agent/targets body: everything one agent runs."""

    agent: str
    region: str
    canaries: list[DerivedCanarySpec]
