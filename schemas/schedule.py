"""Check schedules: ``@every <duration>``, 5-field cron expressions, cron macros and ``@never``."""

from __future__ import annotations

import bisect
import calendar
import functools
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal

from schemas.durations import parse_duration

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month can have
# Every dated cron expression fires at least once per 8 years (Feb 29: 2096 -> 2104).
_HORIZON_YEARS = 9
# 2000-2028 covers the whole 28-year calendar cycle, including the year-to-year transitions.
_PERIOD_YEARS = range(2000, 2029)


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)


_FIELDS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day-of-month", 1, 31),
    _FieldSpec("month", 1, 12, _MONTHS),
    _FieldSpec("day-of-week", 0, 7, _WEEKDAYS),
)


@dataclass(frozen=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is "*"
    any_weekday: bool  # day-of-week is "*"

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.days
        dow = day.toordinal() % 7 in self.weekdays  # ordinal 7 (0001-01-07) is a Sunday
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow  # both restricted: standard cron matches either

    def next_after(self, t: datetime) -> datetime | None:
        start = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        t = start
        while t.year - start.year < _HORIZON_YEARS:
            if t.month not in self.months:
                t = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
                continue
            hour = _next_in(self.hours, t.hour) if self.day_matches(t.date()) else None
            if hour is None:
                t = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
            elif hour != t.hour:
                t = t.replace(hour=hour, minute=0)
            elif (minute := _next_in(self.minutes, t.minute)) is None:
                t = t.replace(minute=0) + timedelta(hours=1)
            else:
                return t.replace(minute=minute)
        return None

    def period_minutes(self) -> int:
        """Return the smallest gap, in minutes, between two consecutive fire times."""
        gaps = [b - a for a, b in itertools.pairwise(self.minutes)]
        wrap = self.minutes[0] - self.minutes[-1]
        gaps += [(b - a) * 60 + wrap for a, b in itertools.pairwise(self.hours)]
        last = self.hours[-1] * 60 + self.minutes[-1]
        first = self.hours[0] * 60 + self.minutes[0]
        return min([*gaps, self._min_day_gap() * 1440 - last + first])

    def _min_day_gap(self) -> int:
        best, previous = _HORIZON_YEARS * 366, None
        for year in _PERIOD_YEARS:
            for month in sorted(self.months):
                for day in range(1, calendar.monthrange(year, month)[1] + 1):
                    current = date(year, month, day)
                    if not self.day_matches(current):
                        continue
                    ordinal = current.toordinal()
                    if previous is not None:
                        best = min(best, ordinal - previous)
                        if best == 1:
                            return 1
                    previous = ordinal
        return best


def _next_in(values: tuple[int, ...], current: int) -> int | None:
    """Return the smallest value >= ``current`` in the sorted ``values``, if any."""
    index = bisect.bisect_left(values, current)
    return values[index] if index < len(values) else None


@dataclass(frozen=True)
class Schedule:
    """A parsed check schedule; build one with :func:`parse_schedule`."""

    text: str
    kind: Literal["every", "cron", "never"]
    _interval: float | None = field(default=None, repr=False)
    _cron: _Cron | None = field(default=None, repr=False)

    def period_seconds(self) -> float | None:
        """Return the smallest gap between two consecutive fire times.

        Returns:
            The interval for ``@every``, the smallest gap between consecutive fire times
            for cron schedules, or ``None`` for ``@never``.
        """
        if self._cron is not None:
            return float(self._cron.period_minutes() * 60)
        return self._interval

    def next_after(self, t: datetime) -> datetime | None:
        """Return the next fire time strictly after ``t``.

        Args:
            t: A timezone-aware datetime. Cron expressions are evaluated in UTC.

        Returns:
            The next fire time in the timezone of ``t``, or ``None`` for ``@never``.

        Raises:
            ValueError: If ``t`` is naive.
        """
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"next_after needs a timezone-aware datetime, got {t!r}")
        if self._interval is not None:
            return t + timedelta(seconds=self._interval)
        if self._cron is None:
            return None
        result = self._cron.next_after(t.astimezone(UTC))
        return None if result is None else result.astimezone(t.tzinfo)

    def next_local_after(self, t: datetime, zone: tzinfo) -> datetime | None:
        """Return the next fire time strictly after ``t``, the cron fields read on the wall
        clock of ``zone`` (maintenance windows: "Sundays 02:00 in Europe/Berlin").

        A wall time skipped by a daylight saving change fires at the same distance after the
        change (02:30 on a spring-forward night is 03:30); a wall time that occurs twice fires
        once, at its first occurrence.

        Args:
            t: A timezone-aware datetime.
            zone: The time zone whose wall clock the cron fields describe.

        Returns:
            The next fire time in UTC, or ``None`` for a schedule that never fires.
        """
        if self._cron is None:
            found = self.next_after(t)
            return None if found is None else found.astimezone(UTC)
        # The cron walk works on naive-looking fields: hand it the wall clock tagged UTC.
        wall = t.astimezone(zone).replace(tzinfo=UTC, fold=0)
        while True:
            fired = self._cron.next_after(wall)
            if fired is None:
                return None
            moment = fired.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if moment > t:
                return moment
            wall = fired  # the wall time came back to before t (the repeated hour): go on

    def shortest_local_gap(self, zone: tzinfo) -> tuple[float, datetime | None]:
        """The shortest real time between two consecutive openings on the wall clock of
        `zone` (`next_local_after`), in seconds, and when it falls: None when it is the
        cron period itself, else the daylight saving change that shortens it (a spring
        forward takes an hour from the pair of openings around it: daily 03:00 openings in
        Europe/Berlin are 23 hours apart that night). Changes from `_GAP_YEARS` are tried.

        Raises:
            ValueError: the schedule is not a cron expression.
        """
        if self._cron is None:
            raise ValueError(f"{self.text!r} is not a cron expression")
        shortest: tuple[float, datetime | None] = (float(self._cron.period_minutes() * 60), None)
        for change in _offset_changes(zone):
            after = self.next_local_after(change - timedelta(microseconds=1), zone)
            if after is None:
                continue
            # The opening before the change and the two after it: a wall time the change
            # skips opens at the old offset, so the pair after it may be the short one.
            openings = [self._last_local_before(after, zone), after]
            openings.append(self.next_local_after(after, zone))
            known = [moment for moment in openings if moment is not None]
            for earlier, later in itertools.pairwise(known):
                gap = (later - earlier).total_seconds()
                if gap < shortest[0]:
                    shortest = (gap, change)
        return shortest

    def _last_local_before(self, moment: datetime, zone: tzinfo) -> datetime | None:
        """The opening just before `moment` (an opening), looked for further and further
        back."""
        reach = timedelta(hours=1)
        while reach <= timedelta(days=_HORIZON_YEARS * 366):
            cursor = self.next_local_after(moment - reach, zone)
            if cursor is not None and cursor < moment:
                while True:
                    following = self.next_local_after(cursor, zone)
                    if following is None or following >= moment:
                        return cursor
                    cursor = following
            reach *= 2
        return None


# Daylight saving changes looked at by `Schedule.shortest_local_gap`: the rules of the coming
# years, whatever year it is (the pure core reads no clock).
_GAP_YEARS = range(2026, 2038)


@functools.lru_cache(maxsize=64)
def _offset_changes(zone: tzinfo) -> tuple[datetime, ...]:
    """The moments (UTC) in `_GAP_YEARS` when `zone`'s offset from UTC changes, to the
    minute: found day by day, then narrowed down."""
    found = []
    moment = datetime(_GAP_YEARS.start, 1, 1, tzinfo=UTC)
    end = datetime(_GAP_YEARS.stop, 1, 1, tzinfo=UTC)
    step = timedelta(days=1)
    offset = moment.astimezone(zone).utcoffset()
    while moment < end:
        following = moment + step
        if following.astimezone(zone).utcoffset() != offset:
            low, high = moment, following  # the change is in (low, high]
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high.replace(second=0, microsecond=0))
            offset = following.astimezone(zone).utcoffset()
        moment = following
    return tuple(found)


def parse_schedule(text: str) -> Schedule:
    """Parse a check schedule.

    Args:
        text: ``@every <duration>`` (e.g. ``@every 30s``), a 5-field cron expression
            (``minute hour day-of-month month day-of-week``), one of the macros ``@hourly``,
            ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``,
            or ``@never``.

    Returns:
        The parsed schedule, keeping ``text`` as given.

    Raises:
        ValueError: If the text is not a valid schedule; the message names the problem.
    """
    stripped = text.strip()
    words = stripped.split(maxsplit=1)
    if words and words[0].lower() == "@every":
        try:
            interval = parse_duration(words[1] if len(words) > 1 else "")
        except ValueError as exc:
            raise ValueError(f"invalid schedule {text!r}: {exc}") from None
        if interval <= 0:
            raise ValueError(f"invalid schedule {text!r}: @every interval must be greater than 0")
        return Schedule(text, "every", _interval=interval)
    if stripped.lower() == "@never":
        return Schedule(text, "never")
    if stripped.startswith("@"):
        if stripped.lower() not in _MACROS:
            accepted = ", ".join(["@every <duration>", *_MACROS, "@never"])
            raise ValueError(f"invalid schedule {text!r}: unknown macro, expected {accepted}")
        stripped = _MACROS[stripped.lower()]
    try:
        cron = _parse_cron(stripped)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    return Schedule(text, "cron", _cron=cron)


def _parse_cron(text: str) -> _Cron:
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(f, spec) for f, spec in zip(fields, _FIELDS, strict=True)
    )
    cron = _Cron(
        minutes=tuple(minutes),
        hours=tuple(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(d % 7 for d in weekdays),  # 7 is Sunday too
        any_day=fields[2] == "*",
        any_weekday=fields[4] == "*",
    )
    if cron.any_weekday and not any(min(days) <= _MAX_DAYS[m - 1] for m in months):
        raise ValueError(f"day-of-month {fields[2]} never occurs in month {fields[3]}")
    return cron


def _parse_field(text: str, spec: _FieldSpec) -> list[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdecimal()) or int(step_text) == 0:
                raise ValueError(f"{spec.name} step {step_text!r} must be a positive integer")
            step = int(step_text)
            if step > spec.high:
                raise ValueError(
                    f"{spec.name} step {step} out of range 1-{spec.high} "
                    f"(a step above {spec.high} never repeats)"
                )
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _parse_value(first, spec), _parse_value(last, spec)
            if low > high:
                raise ValueError(f"{spec.name} range {base!r} starts after it ends")
        else:
            low = _parse_value(base, spec)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return sorted(values)


def _parse_value(token: str, spec: _FieldSpec) -> int:
    if token.isdecimal() and token.isascii():
        value = int(token)
    elif token.upper() in spec.names:
        value = spec.names[token.upper()]
    else:
        names = list(spec.names)
        hint = f" or a name ({names[0]}-{names[-1]})" if names else ""
        raise ValueError(f"{spec.name} value {token!r} is not a number{hint}")
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{spec.name} value {value} out of range {spec.low}-{spec.high}")
    return value
