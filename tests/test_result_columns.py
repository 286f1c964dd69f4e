"""The one-pass reader of result batches takes only what the wire models take, and reads it
the same: for every batch it takes, its columns equal those of the row-by-row reader."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from reconciler.core.result_columns import decode_batch, model_columns, read_columns
from schemas.wire import ResultRow

ROWS = TypeAdapter(list[ResultRow])


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "canary": "web/shop@eu-1",
        "check": "home",
        "started_at": "2026-12-05T10:00:00.123456+02:00",
        "duration_ms": 12.5,
        "status": "pass",
    }
    return {**base, **changes}


TAKEN = [
    [row()],
    [row(duration_ms=12, code=200, retries=3, message="ok")],
    [row(started_at="2026-12-05T08:00:00Z"), row(started_at="2026-12-05T08:00:00.5-03:30")],
    [row(phases={"connect_ms": 1, "total_ms": 12.5})],
    [row(phases={"total_ms": 3.25, "connect_ms": None, "steps_ms": [1, 2.5, 1e-7]})],
    [row(phases={})],
    [row(phases=None, code=None, message=None)],
    [row(phases={"packets_sent": 3, "packets_received": 2, "packet_loss_percent": 33.3})],
    [row(phases={"cert_not_after": 1.8e9, "console_errors": 0, "load_ms": 1e20})],
    [row(canary="ü" * 300, check="c" * 128, message="m" * 4096)],
    [row(status=status) for status in ("pass", "degraded", "fail", "error")],
    [],
]

# Rows the models refuse: the one-pass reader must refuse them too.
REFUSED = [
    # A number is a JSON number (docs/agent-protocol.md: a wrong type is malformed).
    [row(duration_ms="12.5")],
    [row(duration_ms=True)],
    [row(code=200.0)],
    [row(code="200")],
    [row(code=True)],
    [row(retries=True)],
    [row(phases={"packets_sent": True})],
    [row(extra=1)],
    [row(phases={"connect_ms": 1, "surprise": 2})],
    [row(status="maybe")],
    [row(duration_ms=-1)],
    [row(duration_ms=86_400_001)],
    [row(retries=11)],
    [row(retries=None)],
    [row(code=1000)],
    [row(canary="")],
    [row(canary="x" * 301)],
    [row(message="m" * 4097)],
    [row(phases={"packet_loss_percent": 101})],
    [row(phases={"steps_ms": [1.0] * 11})],
    [row(phases={"connect_ms": -0.5})],
    [{k: v for k, v in row().items() if k != "status"}],
    [row(), "not a row"],
    [None],
]

# Rows the models take by coercion, or take for `validate_rows` to drop (a time without an
# offset), which the one-pass reader leaves to them.
COERCED = [
    [row(started_at="2026-12-05T10:00:00")],  # taken, then dropped as malformed by ingest
]


def _same(left: Any, right: Any) -> None:
    assert left.schema == right.schema
    assert left.to_pylist() == right.to_pylist()


@pytest.mark.parametrize("rows", TAKEN)
def test_a_batch_it_takes_reads_as_the_models_read_it(rows: list[dict[str, Any]]) -> None:
    by_models = model_columns(ROWS.validate_python(rows))
    columns = read_columns(rows)
    assert columns is not None
    _same(columns, by_models)
    decoded = decode_batch(orjson.dumps({"results": rows, "sent_at": "2026-12-05T10:00:00Z"}))
    assert decoded is not None
    _same(decoded.columns, by_models)
    assert (
        decoded.sent_at is not None and decoded.sent_at.isoformat() == "2026-12-05T10:00:00+00:00"
    )


def test_phases_are_stored_as_given_with_floats_as_floats() -> None:
    columns = read_columns([row(phases={"total_ms": 12, "connect_ms": 1}), row(phases={})])
    assert columns is not None
    assert columns["phases"].to_pylist() == ['{"connect_ms":1.0,"total_ms":12.0}', None]


@pytest.mark.parametrize("rows", REFUSED)
def test_a_batch_the_models_refuse_is_not_taken(rows: list[Any]) -> None:
    with pytest.raises(ValidationError):
        ROWS.validate_python(rows)
    assert read_columns(rows) is None
    assert decode_batch(orjson.dumps({"results": rows})) is None


@pytest.mark.parametrize("rows", COERCED)
def test_a_batch_only_the_models_take_is_left_to_them(rows: list[Any]) -> None:
    ROWS.validate_python(rows)
    assert read_columns(rows) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"results": [], "other": 1}',
        b'{"results": {}}',
        b"[]",
        b'{"results": [{"duration_ms": 1e400}]}',
        b'{"results": []',
        b'{"results": [], "sent_at": "2026-12-05T10:00:00"}',
    ],
)
def test_a_body_that_is_not_a_clean_batch_is_not_taken(body: bytes) -> None:
    assert decode_batch(body) is None
