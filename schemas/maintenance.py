"""The Maintenance kind: planned windows during which canaries raise no incident or alert."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field

from schemas.base import API_VERSION, Duration, Metadata, Problem, Slug, StrictModel, Text
from schemas.durations import format_duration, parse_duration
from schemas.schedule import parse_schedule
from schemas.selectors import CanarySelector


def _instant(value: Any) -> Any:
    """An RFC 3339 time with its offset: YAML's timestamps arrive parsed, quoted ones as text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an RFC 3339 time (e.g. 2026-12-06T02:00:00Z)"
            ) from None
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no UTC offset: end it with Z or an offset such as +01:00"
        )
    return value


Instant = Annotated[
    datetime,
    BeforeValidator(_instant),
    Field(description="An RFC 3339 time with its offset, e.g. '2026-12-06T02:00:00Z'."),
]


def _shown(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def zone_problem(name: str) -> str | None:
    """Why a time zone name cannot be used, or None when it can."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
    return None


class MaintenanceSpec(StrictModel):
    """When a window is open, and which canaries (and regions) it covers."""

    description: Text | None = Field(default=None, description="Shown on the status page.")
    canaries: CanarySelector = Field(description="The canaries the window covers.")
    regions: list[Slug] = Field(
        default_factory=list, description="Only in these regions; empty: in every region."
    )
    start: Instant | None = Field(default=None, description="One-off window: its start.")
    end: Instant | None = Field(
        default=None, description="One-off window: its end (after start, not included)."
    )
    schedule: str | None = Field(
        default=None,
        max_length=256,
        description="Recurring window: a 5-field cron expression (or @daily, @weekly ...) "
        "for the moments it opens, read on the wall clock of `timezone`.",
    )
    duration: Duration | None = Field(
        default=None,
        description="Recurring window: how long each opening lasts (above 0, at most the "
        "shortest gap between two openings).",
    )
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone the schedule is read in (daylight saving time followed).",
    )

    @property
    def recurring(self) -> bool:
        """Whether the window repeats on a schedule."""
        return self.schedule is not None

    def problems(self) -> Iterator[Problem]:
        for path, message in self.canaries.problems():
            yield (("canaries", *path), message)
        one_off = self.start is not None or self.end is not None
        if one_off and self.recurring:
            yield ((), "either start and end (one-off) or schedule and duration (recurring)")
            return
        if self.recurring:
            yield from self._recurring_problems()
            return
        if self.duration is not None:
            yield (("duration",), "duration belongs to a recurring window (with schedule)")
        if self.start is None or self.end is None:
            missing = "start" if self.start is None else "end"
            yield (
                (missing,),
                f"{missing} is required: a window has start and end, or schedule and duration",
            )
        elif self.end <= self.start:
            yield (("end",), f"end {_shown(self.end)} is not after start {_shown(self.start)}")

    def _recurring_problems(self) -> Iterator[Problem]:
        unknown_zone = zone_problem(self.timezone)
        if unknown_zone is not None:
            yield (("timezone",), unknown_zone)
        assert self.schedule is not None
        try:
            schedule = parse_schedule(self.schedule)
        except ValueError as error:
            yield (("schedule",), str(error))
            return
        if schedule.kind != "cron":
            yield (("schedule",), f"{self.schedule!r}: a window needs a cron expression")
            return
        if self.duration is None:
            yield (("duration",), "duration is required for a recurring window")
            return
        seconds = parse_duration(self.duration)
        if seconds <= 0:
            yield (("duration",), "duration must be greater than 0")
            return
        # Real time between openings: a daylight saving change shortens the pair around it.
        zone = ZoneInfo("UTC" if unknown_zone else self.timezone)
        period, change = schedule.shortest_local_gap(zone)
        if seconds > period:
            where = ""
            if change is not None:
                where = f", across the daylight saving change of {change:%Y-%m-%d} in {zone}"
            yield (
                ("duration",),
                f"duration {self.duration} is longer than the shortest gap between two "
                f"openings of {self.schedule!r} ({format_duration(period)}{where}): windows "
                "would overlap",
            )


class MaintenanceDocument(StrictModel):
    """A `kind: Maintenance` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Maintenance"] = "Maintenance"
    metadata: Metadata
    spec: MaintenanceSpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)
