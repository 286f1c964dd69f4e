"""Validate a batch of agent results row by row: what lands, and what is dropped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reconciler.core.agentconfig import AgentConfig
from schemas.wire import ResultRow


@dataclass(frozen=True)
class IngestPolicy:
    """How far from the server's clock a result may be."""

    skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=24)


@dataclass
class AcceptedRows:
    """Rows that passed validation, column by column, ready for one bulk insert."""

    canary: list[str] = field(default_factory=list)
    parent: list[str] = field(default_factory=list)
    check_name: list[str] = field(default_factory=list)
    check_type: list[str] = field(default_factory=list)
    started_at: list[datetime] = field(default_factory=list)
    duration_ms: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    code: list[int | None] = field(default_factory=list)
    message: list[str | None] = field(default_factory=list)
    phases: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.canary)

    def append(self, row: ResultRow, check_type: str) -> None:
        self.canary.append(row.canary)
        self.parent.append(row.canary.rsplit("@", 1)[0])
        self.check_name.append(row.check)
        self.check_type.append(check_type)
        self.started_at.append(row.started_at)
        self.duration_ms.append(row.duration_ms)
        self.status.append(row.status)
        self.code.append(row.code)
        self.message.append(row.message)
        # One call into pydantic's serializer; a phases object with no value stores NULL.
        phases = row.phases.model_dump_json(exclude_none=True) if row.phases else None
        self.phases.append(phases if phases and phases != "{}" else None)


# A whole batch validated in one call into pydantic-core: per-row calls cost more than the
# checks themselves. A batch with any malformed row is validated again row by row.
_ROWS = TypeAdapter(list[ResultRow])


def _models(rows: list[Any], dropped: Counter[str]) -> list[ResultRow]:
    """The rows that are valid result rows; the others are counted as `malformed`."""
    try:
        return _ROWS.validate_python(rows)
    except ValidationError:
        pass
    valid = []
    for raw in rows:
        try:
            valid.append(ResultRow.model_validate(raw))
        except ValidationError:
            dropped["malformed"] += 1
    return valid


@dataclass
class BatchVerdict:
    """The accepted rows of a batch and the count of dropped rows by reason."""

    accepted: AcceptedRows
    dropped: Counter[str]


def validate_rows(
    rows: list[Any],
    config: AgentConfig,
    now: datetime,
    sent_at: datetime | None = None,
    policy: IngestPolicy = IngestPolicy(),  # noqa: B008 - frozen, never mutated
) -> BatchVerdict:
    """Check each row on its own; the agent and region come from its token, not the rows.

    A row is dropped as `malformed` (not a valid result row), `clock_skew` (started in the
    future beyond the skew window, or the whole batch when `sent_at` shows the agent's clock
    is off by more than the window), `too_old` (older than `max_age`), `unassigned_canary`
    (not one of this agent's derived canaries) or `unknown_check` (no such check in it).

    Args:
        rows: the batch's `results` list as decoded JSON.
        config: the agent's current config.
        now: the server's clock.
        sent_at: the agent's clock when it sent the batch, if it said.
        policy: the skew window and maximum age.
    """
    accepted, dropped = AcceptedRows(), Counter[str]()
    if sent_at is not None and abs(sent_at - now) > policy.skew:
        dropped["clock_skew"] = len(rows)
        return BatchVerdict(accepted, dropped)
    newest, oldest = now + policy.skew, now - policy.max_age
    checks = config.checks
    for row in _models(rows, dropped):
        if row.started_at.tzinfo is None:
            dropped["malformed"] += 1
        elif row.started_at > newest:
            dropped["clock_skew"] += 1
        elif row.started_at < oldest:
            dropped["too_old"] += 1
        elif row.canary not in checks:
            dropped["unassigned_canary"] += 1
        elif row.check not in checks[row.canary]:
            dropped["unknown_check"] += 1
        else:
            accepted.append(row, checks[row.canary][row.check])
    return BatchVerdict(accepted, dropped)
