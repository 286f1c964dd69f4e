"""Tests for check schedules: @every, cron expressions, macros and @never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.schedule import Schedule, parse_schedule


def at(text: str) -> datetime:
    """A UTC datetime from ``YYYY-MM-DD HH:MM``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def fires(expression: str, start: str, count: int) -> list[str]:
    """The first ``count`` fire times strictly after ``start``, as ``YYYY-MM-DD HH:MM``."""
    schedule = parse_schedule(expression)
    t = at(start)
    result = []
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        result.append(nxt.strftime("%Y-%m-%d %H:%M"))
        t = nxt
    return result


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("@every 30s", "every"),
        ("@every 1h30m", "every"),
        ("*/5 * * * *", "cron"),
        ("@hourly", "cron"),
        ("@DAILY", "cron"),
        ("@never", "never"),
    ],
)
def test_kind(text: str, kind: str) -> None:
    schedule = parse_schedule(text)
    assert schedule.kind == kind
    assert schedule.text == text


def test_text_is_kept_as_given_and_schedule_is_frozen() -> None:
    schedule = parse_schedule("  */5 * * * * ")
    assert schedule.text == "  */5 * * * * "
    with pytest.raises(AttributeError):
        schedule.text = "other"  # type: ignore[misc]
    assert isinstance(schedule, Schedule)


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("@every 30s", 30.0),
        ("@every 500ms", 0.5),
        ("@every 1h30m", 5400.0),
        ("*/5 * * * *", 300.0),
        ("0 * * * *", 3600.0),
        ("0 9 * * MON-FRI", 86400.0),
        ("0,30 * * * *", 1800.0),
        ("* * * * *", 60.0),
        ("0,59 * * * *", 60.0),  # 10:59 -> 11:00
        ("10,50 9,17 * * *", 2400.0),
        ("30 23 * * *", 86400.0),
        ("0 0 * * MON", 7 * 86400.0),
        ("0 0 * * MON,WED", 2 * 86400.0),
        ("0 0 1 * *", 28 * 86400.0),
        ("0 0 31 * *", 31 * 86400.0),
        ("0 0 1 1 *", 365 * 86400.0),
        ("0 0 29 2 *", 1461 * 86400.0),
        ("0 0 13 * FRI", 86400.0),  # e.g. Thursday 13th, then Friday 14th
        ("@hourly", 3600.0),
        ("@daily", 86400.0),
        ("@weekly", 7 * 86400.0),
        ("@monthly", 28 * 86400.0),
        ("@yearly", 365 * 86400.0),
        ("@never", None),
    ],
)
def test_period_seconds(text: str, period: float | None) -> None:
    assert parse_schedule(text).period_seconds() == period


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # "*", plain numbers, and "strictly after"
        ("* * * * *", "2025-01-01 10:00", ["2025-01-01 10:01", "2025-01-01 10:02"]),
        ("15 10 * * *", "2025-01-01 10:15", ["2025-01-02 10:15", "2025-01-03 10:15"]),
        ("15 10 * * *", "2025-01-01 10:14", ["2025-01-01 10:15", "2025-01-02 10:15"]),
        # ranges, steps and lists
        (
            "10-12 * * * *",
            "2025-01-01 10:00",
            ["2025-01-01 10:10", "2025-01-01 10:11", "2025-01-01 10:12", "2025-01-01 11:10"],
        ),
        (
            "*/15 * * * *",
            "2025-01-01 10:00",
            ["2025-01-01 10:15", "2025-01-01 10:30", "2025-01-01 10:45", "2025-01-01 11:00"],
        ),
        (
            "10-30/10 * * * *",
            "2025-01-01 10:00",
            ["2025-01-01 10:10", "2025-01-01 10:20", "2025-01-01 10:30", "2025-01-01 11:10"],
        ),
        (
            "5,10,50 * * * *",
            "2025-01-01 10:00",
            ["2025-01-01 10:05", "2025-01-01 10:10", "2025-01-01 10:50", "2025-01-01 11:05"],
        ),
        (
            "0 8-16/4 * * *",
            "2025-01-01 10:00",
            ["2025-01-01 12:00", "2025-01-01 16:00", "2025-01-02 08:00"],
        ),
        (
            "0 0 1,15 */6 *",
            "2025-01-01 10:00",
            ["2025-01-15 00:00", "2025-07-01 00:00", "2025-07-15 00:00", "2026-01-01 00:00"],
        ),
        # month and weekday names, case-insensitive (2025-01-01 is a Wednesday)
        ("0 0 1 JAN,jul *", "2025-01-01 10:00", ["2025-07-01 00:00", "2026-01-01 00:00"]),
        (
            "0 0 1 Mar-May *",
            "2025-01-01 10:00",
            ["2025-03-01 00:00", "2025-04-01 00:00", "2025-05-01 00:00", "2026-03-01 00:00"],
        ),
        (
            "0 0 * * sat,SUN",
            "2025-01-01 10:00",
            ["2025-01-04 00:00", "2025-01-05 00:00", "2025-01-11 00:00"],
        ),
        ("0 9 * * MON-FRI", "2025-01-03 10:00", ["2025-01-06 09:00", "2025-01-07 09:00"]),
        # day-of-week 7 is Sunday, like 0
        ("0 0 * * 7", "2025-01-01 10:00", ["2025-01-05 00:00", "2025-01-12 00:00"]),
        ("0 0 * * 0", "2025-01-01 10:00", ["2025-01-05 00:00", "2025-01-12 00:00"]),
        (
            "0 0 * * 5-7",
            "2025-01-01 10:00",
            ["2025-01-03 00:00", "2025-01-04 00:00", "2025-01-05 00:00", "2025-01-10 00:00"],
        ),
        # month and year boundaries
        ("0 0 1 * *", "2025-01-31 12:00", ["2025-02-01 00:00", "2025-03-01 00:00"]),
        ("0 0 31 * *", "2025-04-01 00:00", ["2025-05-31 00:00", "2025-07-31 00:00"]),
        ("30 23 31 12 *", "2025-12-31 23:30", ["2026-12-31 23:30"]),
        ("0 0 1 1 *", "2025-06-01 00:00", ["2026-01-01 00:00", "2027-01-01 00:00"]),
        ("59 23 * * *", "2025-12-31 23:59", ["2026-01-01 23:59"]),
        ("0 0 28-31 2 *", "2025-01-01 00:00", ["2025-02-28 00:00", "2026-02-28 00:00"]),
        # Feb 29 only exists in leap years; 2100 is not one
        ("0 0 29 2 *", "2025-03-01 00:00", ["2028-02-29 00:00", "2032-02-29 00:00"]),
        ("0 0 29 2 *", "2096-03-01 00:00", ["2104-02-29 00:00"]),
        # day-of-month and day-of-week both restricted: either matches (2025-06-13 is a Friday)
        (
            "0 0 13 * MON",
            "2025-06-01 00:00",
            ["2025-06-02 00:00", "2025-06-09 00:00", "2025-06-13 00:00", "2025-06-16 00:00"],
        ),
        ("0 0 1 * SUN", "2025-05-25 12:00", ["2025-06-01 00:00", "2025-06-08 00:00"]),
        # only one of them restricted: just that one applies
        ("0 0 13 * *", "2025-06-01 00:00", ["2025-06-13 00:00", "2025-07-13 00:00"]),
        ("0 0 * * MON", "2025-06-01 00:00", ["2025-06-02 00:00", "2025-06-09 00:00"]),
    ],
)
def test_next_after(expression: str, start: str, expected: list[str]) -> None:
    assert fires(expression, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("macro", "expression"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macros(macro: str, expression: str) -> None:
    assert fires(macro, "2025-03-15 10:30", 5) == fires(expression, "2025-03-15 10:30", 5)


def test_every_adds_the_interval() -> None:
    t = datetime(2025, 1, 1, 10, 0, 7, tzinfo=UTC)
    assert parse_schedule("@every 1m30s").next_after(t) == t + timedelta(seconds=90)


def test_never_never_fires() -> None:
    assert parse_schedule("@never").next_after(at("2025-01-01 00:00")) is None


def test_next_after_keeps_the_timezone_and_evaluates_cron_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2025, 1, 1, 0, 0, tzinfo=plus_two)  # 2024-12-31 22:00 UTC
    result = parse_schedule("0 9 * * *").next_after(start)
    assert result == datetime(2025, 1, 1, 11, 0, tzinfo=plus_two)
    assert result is not None
    assert result.tzinfo is plus_two


def test_next_after_with_seconds_goes_to_the_next_minute() -> None:
    start = datetime(2025, 1, 1, 10, 0, 30, tzinfo=UTC)
    assert parse_schedule("* * * * *").next_after(start) == at("2025-01-01 10:01")


def test_next_after_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("* * * * *").next_after(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *': minute value 61 out of range 0-59"),
        ("* 24 * * *", "hour value 24 out of range 0-23"),
        ("* * 0 * *", "day-of-month value 0 out of range 1-31"),
        ("* * 32 * *", "day-of-month value 32 out of range 1-31"),
        ("* * * 13 *", "month value 13 out of range 1-12"),
        ("* * * * 8", "day-of-week value 8 out of range 0-7"),
        ("* * * FOO *", "month value 'FOO' is not a number or a name (JAN-DEC)"),
        ("* * * * FUN", "day-of-week value 'FUN' is not a number or a name (SUN-SAT)"),
        ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("* * * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("x * * * *", "minute value 'x' is not a number"),
        ("1,,2 * * * *", "minute value '' is not a number"),
        ("30-10 * * * *", "minute range '30-10' starts after it ends"),
        ("*/0 * * * *", "minute step '0' must be a positive integer"),
        ("*/x * * * *", "minute step 'x' must be a positive integer"),
        ("-5 * * * *", "minute value '' is not a number"),
        ("0 0 30 2 *", "day-of-month 30 never occurs in month 2"),
        ("0 0 31 APR,JUN *", "day-of-month 31 never occurs in month APR,JUN"),
        ("@every", "invalid schedule '@every': invalid duration ''"),
        ("@every 0s", "@every interval must be greater than 0"),
        ("@every 5", "missing unit"),
        ("@every -5s", "negative durations are not allowed"),
        ("@every abc", "expected a number followed by a unit"),
        ("@fortnightly", "invalid schedule '@fortnightly': unknown macro, expected @every"),
    ],
)
def test_invalid_schedules(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(text)
    assert problem in str(info.value)
