"""Validate a batch of agent results row by row: what lands, and what is dropped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from reconciler.core.agentconfig import AgentConfig
from schemas.wire import Phases, ResultRow


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
    retries: list[int] = field(default_factory=list)
    # Set by the server from its maintenance windows, never by the agent.
    maintenance: list[bool] = field(default_factory=list)
    code: list[int | None] = field(default_factory=list)
    message: list[str | None] = field(default_factory=list)
    phases: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.canary)

    @classmethod
    def of(cls, rows: list[ResultRow], check_types: list[str]) -> AcceptedRows:
        """Columns of valid rows at once: a comprehension per column, not ten appends a row."""
        canary = [row.canary for row in rows]
        parents = {name: name.rsplit("@", 1)[0] for name in set(canary)}
        return cls(
            canary=canary,
            parent=[parents[name] for name in canary],
            check_name=[row.check for row in rows],
            check_type=check_types,
            started_at=[row.started_at for row in rows],
            duration_ms=[row.duration_ms for row in rows],
            status=[row.status for row in rows],
            retries=[row.retries for row in rows],
            maintenance=[False] * len(rows),
            code=[row.code for row in rows],
            message=[row.message for row in rows],
            phases=_phases_column(rows),
        )

    def take(self, indices: list[int]) -> AcceptedRows:
        """The rows at `indices`, in that order."""
        return AcceptedRows(
            **{name: [column[i] for i in indices] for name, column in vars(self).items()}
        )

    def append(self, row: ResultRow, check_type: str) -> None:
        self.canary.append(row.canary)
        self.parent.append(row.canary.rsplit("@", 1)[0])
        self.check_name.append(row.check)
        self.check_type.append(check_type)
        self.started_at.append(row.started_at)
        self.duration_ms.append(row.duration_ms)
        self.status.append(row.status)
        self.retries.append(row.retries)
        self.maintenance.append(False)
        self.code.append(row.code)
        self.message.append(row.message)
        self.phases.append(_phases(row))


_PHASES = TypeAdapter(list[Phases | None])


def _phases_column(rows: list[ResultRow]) -> list[str | None]:
    """Every row's phases as stored, dumped to dicts in one call into pydantic-core."""
    dumped = _PHASES.dump_python([row.phases for row in rows], exclude_none=True)
    return [orjson.dumps(phases).decode() if phases else None for phases in dumped]


def _phases(row: ResultRow) -> str | None:
    """A row's phases as stored: JSON of the values given, NULL when there are none."""
    if row.phases is None:
        return None
    # One call into pydantic's serializer rather than a dump to a dict, then to JSON.
    text = row.phases.model_dump_json(exclude_none=True)
    return text if text != "{}" else None


# A whole batch validated in one call into pydantic-core: per-row calls cost more than the
# checks themselves. A batch with any malformed row is validated again row by row. Rows that
# are already `ResultRow`s (the HTTP route validates well-formed bodies from their JSON) pass
# through without a second validation.
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
    dropped = Counter[str]()
    if sent_at is not None and abs(sent_at - now) > policy.skew:
        dropped["clock_skew"] = len(rows)
        return BatchVerdict(AcceptedRows(), dropped)
    newest, oldest = now + policy.skew, now - policy.max_age
    checks = config.checks
    kept: list[ResultRow] = []
    check_types: list[str] = []
    # The window in each offset the rows use: two datetimes with the very same tzinfo compare
    # field by field, while mixed ones call `utcoffset` on both sides (ten times slower).
    windows: dict[tzinfo, tuple[datetime, datetime]] = {}
    for row in _models(rows, dropped):
        started = row.started_at
        of_canary = checks.get(row.canary)
        zone = started.tzinfo
        if zone is None:
            dropped["malformed"] += 1
            continue
        window = windows.get(zone)
        if window is None:
            # Only a fixed offset (what JSON carries) may be compared field by field; a zone
            # with daylight saving time keeps the exact comparison.
            fixed = zone.utcoffset(None) is not None
            window = (
                (newest.astimezone(zone), oldest.astimezone(zone)) if fixed else (newest, oldest)
            )
            windows[zone] = window
        if started > window[0]:
            dropped["clock_skew"] += 1
        elif started < window[1]:
            dropped["too_old"] += 1
        elif of_canary is None:
            dropped["unassigned_canary"] += 1
        elif row.check not in of_canary:
            dropped["unknown_check"] += 1
        else:
            kept.append(row)
            check_types.append(of_canary[row.check])
    return BatchVerdict(AcceptedRows.of(kept, check_types), dropped)
