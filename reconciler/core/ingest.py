"""Validate a batch of agent results: what lands, and what is dropped and why.

Each row is judged on its own, but on whole columns at once: a batch is read into Arrow
columns (`result_columns`), and the time window, the agent's canaries and their checks are
checked column by column. Only a batch with a malformed row is read row by row with the wire
models, so that row alone is dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from reconciler.core.agentconfig import AgentConfig
from reconciler.core.result_columns import ROW_SCHEMA, TIMESTAMP, model_columns, read_columns
from schemas.wire import ResultRow


@dataclass(frozen=True)
class IngestPolicy:
    """How far from the server's clock a result may be."""

    skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=24)


# A row as read (`ROW_SCHEMA`), then what the server adds: the canary it derives from, the
# check's type, and `maintenance`, set from the server's windows, never by the agent.
_ADDED: Final = (
    pa.field("parent", pa.string()),
    pa.field("check_type", pa.string()),
    pa.field("maintenance", pa.bool_()),
)
ACCEPTED_SCHEMA: Final = pa.schema([*ROW_SCHEMA, *_ADDED])


@dataclass
class AcceptedRows:
    """Rows that passed validation, as Arrow columns (`ACCEPTED_SCHEMA`), ready for one bulk
    insert."""

    table: pa.Table = field(default_factory=ACCEPTED_SCHEMA.empty_table)

    @classmethod
    def of(cls, **columns: list[Any]) -> AcceptedRows:
        """Rows from lists by column name; a column not given is all null (`maintenance`:
        all false)."""
        count = len(next(iter(columns.values()), []))
        given = {"maintenance": [False] * count, **columns}
        return cls(
            pa.table(
                [pa.array(given.get(f.name, [None] * count), f.type) for f in ACCEPTED_SCHEMA],
                schema=ACCEPTED_SCHEMA,
            )
        )

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def canaries(self) -> list[str]:
        """Each row's derived canary."""
        return self.table["canary"].to_pylist()  # type: ignore[no-any-return]

    def started_at(self) -> list[datetime]:
        """Each row's start, as aware datetimes (UTC)."""
        return self.table["started_at"].to_pylist()  # type: ignore[no-any-return]

    def mark_maintenance(self, indices: list[int]) -> None:
        """Set `maintenance` on the rows at `indices`."""
        flags = self.table["maintenance"].to_pylist()
        for index in indices:
            flags[index] = True
        position = ACCEPTED_SCHEMA.get_field_index("maintenance")
        self.table = self.table.set_column(
            position, ACCEPTED_SCHEMA.field(position), pa.array(flags, pa.bool_())
        )


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
    """The accepted rows of a batch and the count of dropped rows by reason (only reasons
    that dropped at least one row: the agent protocol reports `dropped` as it is)."""

    accepted: AcceptedRows
    dropped: Counter[str]


@dataclass(frozen=True)
class _Assignment:
    """An agent's config as value sets to look result rows up in."""

    canaries: pa.Array  # derived canary ids
    parents: pa.Array  # the canary each one derives from, at the same index
    pairs: pa.Array  # "canary\x00check" of every check of every canary
    types: pa.Array  # each pair's check type, at the same index


# A canary id never holds a NUL, so "canary\x00check" names one pair of a known canary.
_PAIR = "\x00"
# By agent: its current config and that config's value sets (one entry per agent, so an old
# config, and its body, is not kept alive once the agent has a newer one).
_ASSIGNMENTS: dict[str, tuple[AgentConfig, _Assignment]] = {}


def _assignment(config: AgentConfig) -> _Assignment:
    """The value sets of a config, made once per config object (configs are immutable)."""
    cached = _ASSIGNMENTS.get(config.agent)
    if cached is not None and cached[0] is config:
        return cached[1]
    canaries = sorted(config.checks)
    pairs = [
        (f"{canary}{_PAIR}{check}", kind)
        for canary in canaries
        for check, kind in config.checks[canary].items()
    ]
    assignment = _Assignment(
        canaries=pa.array(canaries, pa.string()),
        parents=pa.array([canary.rsplit("@", 1)[0] for canary in canaries], pa.string()),
        pairs=pa.array([pair for pair, _ in pairs], pa.string()),
        types=pa.array([kind for _, kind in pairs], pa.string()),
    )
    _ASSIGNMENTS[config.agent] = (config, assignment)
    return assignment


def _row_columns(rows: list[Any], dropped: Counter[str]) -> pa.Table:
    """The valid rows as columns: the whole batch at once, else row by row."""
    columns = read_columns(rows)
    if columns is not None:
        return columns
    models = _models(rows, dropped)
    aware = [row for row in models if row.started_at.tzinfo is not None]
    if len(aware) < len(models):
        dropped["malformed"] += len(models) - len(aware)
    return model_columns(aware)


def validate_rows(
    rows: list[Any] | pa.Table,
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
        rows: the batch's `results` list as decoded JSON, or its rows already read into
            columns (`result_columns.decode_batch`).
        config: the agent's current config.
        now: the server's clock.
        sent_at: the agent's clock when it sent the batch, if it said.
        policy: the skew window and maximum age.
    """
    dropped = Counter[str]()
    if sent_at is not None and abs(sent_at - now) > policy.skew:
        # Only reasons with a count are reported: an empty batch drops nothing.
        if len(rows):
            dropped["clock_skew"] = len(rows)
        return BatchVerdict(AcceptedRows(), dropped)
    table = rows if isinstance(rows, pa.Table) else _row_columns(rows, dropped)
    if not table.num_rows:
        return BatchVerdict(AcceptedRows(), dropped)
    assignment = _assignment(config)
    canary, started = table["canary"], table["started_at"]
    pair = pc.binary_join_element_wise(canary, table["check_name"], _PAIR)
    canary_at = pc.index_in(canary, value_set=assignment.canaries)
    pair_at = pc.index_in(pair, value_set=assignment.pairs)
    future = pc.greater(started, pa.scalar(now + policy.skew, TIMESTAMP))
    old = pc.less(started, pa.scalar(now - policy.max_age, TIMESTAMP))
    in_window = pc.invert(pc.or_(future, old))
    keep = pc.and_(in_window, pc.is_valid(pair_at))
    kept = int(pc.sum(keep).as_py() or 0)
    if kept < table.num_rows:
        for reason, mask in (
            ("clock_skew", future),
            ("too_old", old),  # never also `future`: the window is not empty
            ("unassigned_canary", pc.and_(in_window, pc.is_null(canary_at))),
            (
                "unknown_check",
                pc.and_(pc.and_(in_window, pc.is_valid(canary_at)), pc.is_null(pair_at)),
            ),
        ):
            count = int(pc.sum(mask).as_py() or 0)
            if count:
                dropped[reason] += count
        table, canary_at, pair_at = table.filter(keep), canary_at.filter(keep), pair_at.filter(keep)
    added = (
        pc.take(assignment.parents, canary_at),
        pc.take(assignment.types, pair_at),
        pa.array([False] * table.num_rows, pa.bool_()),
    )
    accepted = pa.Table.from_arrays([*table.columns, *added], schema=ACCEPTED_SCHEMA)
    return BatchVerdict(AcceptedRows(accepted), dropped)
