"""Tests for Go-style duration strings."""

from __future__ import annotations

import math

import pytest

from schemas.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h0m0s", 3600.0),
        ("1s500ms", 1.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("0.1s", 0.1),
        (" 30s ", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abc", "expected a number followed by a unit (ms, s, m, h)"),
        ("", "expected a number followed by a unit"),
        ("5", "missing unit"),
        ("1.5", "missing unit"),
        ("-5s", "negative durations are not allowed"),
        ("-0s", "negative durations are not allowed"),
        ("1h 30m", "expected a number followed by a unit"),
        ("30sec", "expected a number followed by a unit"),
        ("1d", "expected a number followed by a unit"),
        ("s", "expected a number followed by a unit"),
        ("1..5s", "expected a number followed by a unit"),
        ("5s3", "expected a number followed by a unit"),
        ("+5s", "expected a number followed by a unit"),
    ],
)
def test_parse_duration_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert f"invalid duration {text!r}" in str(info.value)
    assert problem in str(info.value)


def test_parse_duration_error_gives_examples() -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '30s' or '1h30m'"):
        parse_duration("abc")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (0.00025, "250us"),
        (1.5, "1.5s"),
        (30, "30s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (3600, "1h"),
        (3601, "1h1s"),
        (5400, "1h30m"),
        (7200, "2h"),
        (3661.25, "1h1m1.25s"),
        (0.1 + 0.2, "300ms"),
        (100 * 3600, "100h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "text", ["0s", "500ms", "1.5ms", "250us", "1.5s", "30s", "1m30s", "5m", "1h30m", "2h", "1h1s"]
)
def test_format_parse_round_trip_of_canonical_text(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("seconds", [0, 0.001, 0.5, 1, 1.25, 59.999, 61, 3599, 3600.5, 86400, 1e6])
def test_parse_format_round_trip_of_seconds(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("seconds", [-1, -0.001, math.inf, math.nan])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="expected a finite number >= 0"):
        format_duration(seconds)
