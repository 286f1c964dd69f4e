"""Result rows as Arrow columns, read the way `ResultRow` reads them but a whole batch at once.

Reading 500 rows into 500 pydantic models and back out into columns costs more than storing
them. So a batch is first decoded with msgspec into structs made from the wire models
(`schemas.wire.ResultRow` and `Phases`: the same fields, defaults and bounds), straight from
its JSON bytes, and the structs are turned into columns. Both are strict about numbers (a
string or `true` is never a number here); msgspec also refuses a time without an offset,
which the models take and ingest drops as malformed, so it takes a subset of what the models
take: a batch it refuses is validated row by row with the models, and each bad row is
dropped on its own. tests/test_result_columns.py holds the two readers side by side.

The columns (`ROW_SCHEMA`): canary, check_name, started_at (µs, UTC), duration_ms, status,
retries, code, message, and phases as the JSON text stored in the state file (the values
given, in the model's field order; NULL when none is given).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Union, get_args, get_origin

import msgspec
import pyarrow as pa
from pydantic import BaseModel

from schemas.wire import ResultBatch, ResultRow

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

ROW_SCHEMA: Final = pa.schema(
    [
        ("canary", pa.string()),
        ("check_name", pa.string()),
        ("started_at", TIMESTAMP),
        ("duration_ms", pa.float64()),
        ("status", pa.string()),
        ("retries", pa.int16()),
        ("code", pa.int32()),
        ("message", pa.string()),
        ("phases", pa.string()),
    ]
)

_BOUNDS = ("ge", "gt", "le", "lt", "min_length", "max_length")


def _strict_type(annotation: Any, metadata: Sequence[Any]) -> Any:
    """The msgspec type of a pydantic field: its type with its bounds, None kept optional."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    if type(None) in options:
        (inner,) = [option for option in options if option is not type(None)]
        return _strict_type(inner, metadata) | None
    bounds = {key: getattr(item, key) for item in metadata for key in _BOUNDS if hasattr(item, key)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _struct_of(annotation)
    if annotation is datetime:
        bounds["tz"] = True  # a time without an offset is malformed (see ingest.validate_rows)
    return Annotated[annotation, msgspec.Meta(**bounds)] if bounds else annotation


def _struct_of(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec struct with the fields, defaults and bounds of a wire model."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        kind = _strict_type(info.annotation, info.metadata)
        fields.append((name, kind) if info.is_required() else (name, kind, info.default))
    # gc=False: a struct holds only values and other such structs, never a cycle, so the
    # collector need not track the 1,000 made for every 500-row batch.
    return msgspec.defstruct(
        model.__name__, fields, forbid_unknown_fields=True, omit_defaults=True, gc=False
    )


_ROW: Final = _struct_of(ResultRow)
_BATCH: Final = msgspec.defstruct(
    "ResultBatch",
    [
        ("results", list[_ROW]),  # type: ignore[valid-type]
        ("sent_at", _strict_type(ResultBatch.model_fields["sent_at"].annotation, []), None),
    ],
    forbid_unknown_fields=True,
)
_BATCH_DECODER: Final = msgspec.json.Decoder(_BATCH)
_ROWS_TYPE: Final = list[_ROW]  # type: ignore[valid-type]
_ENCODER: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class DecodedBatch:
    """A results body whose every row was read: its rows as columns and the agent's clock."""

    columns: pa.Table
    sent_at: datetime | None


def decode_batch(body: bytes) -> DecodedBatch | None:
    """A results body read in one pass from its JSON; None when any part of it is not taken
    (the caller then reads it with the models, row by row)."""
    try:
        batch: Any = _BATCH_DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    sent_at = batch.sent_at
    return DecodedBatch(_struct_columns(batch.results), sent_at)


def read_columns(rows: list[Any]) -> pa.Table | None:
    """Decoded JSON rows as columns when every one is taken; None otherwise."""
    try:
        structs = msgspec.convert(rows, _ROWS_TYPE)
    except msgspec.ValidationError:
        return None
    return _struct_columns(structs)


def _phases_text(encoded: bytes | None) -> str | None:
    return None if encoded is None or encoded == b"{}" else encoded.decode()


def _columns(rows: Sequence[Any], phases_json: Callable[[Any], bytes]) -> pa.Table:
    """Rows (structs or models: the same attributes) as columns; `phases_json` encodes the
    phases given, leaving out the absent ones."""
    return pa.table(
        [
            pa.array([row.canary for row in rows], pa.string()),
            pa.array([row.check for row in rows], pa.string()),
            pa.array([row.started_at for row in rows], TIMESTAMP),
            pa.array([row.duration_ms for row in rows], pa.float64()),
            pa.array([row.status for row in rows], pa.string()),
            pa.array([row.retries for row in rows], pa.int16()),
            pa.array([row.code for row in rows], pa.int32()),
            pa.array([row.message for row in rows], pa.string()),
            pa.array(
                [
                    None if row.phases is None else _phases_text(phases_json(row.phases))
                    for row in rows
                ],
                pa.string(),
            ),
        ],
        schema=ROW_SCHEMA,
    )


def _struct_columns(rows: Sequence[Any]) -> pa.Table:
    return _columns(rows, _ENCODER.encode)


def model_columns(rows: Sequence[ResultRow]) -> pa.Table:
    """Rows validated as models, as `ROW_SCHEMA` columns."""
    return _columns(rows, lambda phases: _ENCODER.encode(phases.model_dump(exclude_none=True)))
