"""Maintenance windows: which are open at a time for a (canary, region), and which come next.

Pure: windows are built from the served `Maintenance` resources (whose spec carries the
canaries the compiler found selected) and the clock is an argument. A window is half-open,
`[start, end)`; a recurring window opens at each fire time of its cron expression read on the
wall clock of its time zone (`Schedule.next_local_after`) and stays open `duration` of real
time, so a two-hour window stays two hours long across a daylight saving change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from reconciler.core.ingest import AcceptedRows
from reconciler.core.resources import Resource
from reconciler.core.status import CanaryState, Status
from schemas.durations import parse_duration
from schemas.schedule import Schedule, parse_schedule

# Upcoming openings listed per window: enough for a status page, bounded for a `* * * * *`.
MAX_UPCOMING_PER_WINDOW = 5


@dataclass(frozen=True)
class Occurrence:
    """One opening of a window: when, and what it covers."""

    window: str
    start: datetime
    end: datetime
    description: str | None
    canaries: tuple[str, ...]
    regions: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        """The JSON form the APIs and the site show."""
        return {
            "name": self.window,
            "description": self.description,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "canaries": list(self.canaries),
            "regions": list(self.regions),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """A maintenance window: one-off (`start`, `end`) or recurring (`schedule`, `duration`)."""

    name: str
    canaries: frozenset[str]
    regions: frozenset[str] = frozenset()
    description: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    schedule: Schedule | None = None
    duration: timedelta = timedelta(0)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    def covers(self, canary: str, region: str) -> bool:
        """Whether the window applies to this canary key in this region."""
        return canary in self.canaries and (not self.regions or region in self.regions)

    def occurrences(self, since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Every opening that overlaps `[since, until)`, in time order."""
        if self.schedule is None:
            start, end = self.start, self.end
            if start is not None and end is not None and start < until and end > since:
                yield start, end
            return
        # An opening that started up to `duration` before `since` is still open at `since`.
        cursor = since - self.duration
        while True:
            opened = self.schedule.next_local_after(cursor, self.zone)
            if opened is None or opened >= until:
                return
            closed = opened + self.duration
            if closed > since:
                yield opened, closed
            cursor = opened

    def open_at(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The opening in progress at `at`, if any."""
        return next(self.occurrences(at, at + timedelta(microseconds=1)), None)

    def occurrence(self, start: datetime, end: datetime) -> Occurrence:
        """An opening of this window as shown."""
        return Occurrence(
            self.name,
            start,
            end,
            self.description,
            tuple(sorted(self.canaries)),
            tuple(sorted(self.regions)),
        )


def window_of(resource: Resource) -> Window:
    """The window a compiled `Maintenance` resource describes.

    Args:
        resource: a `Maintenance` resource; its spec is the document's spec plus `selected`,
            the keys of the canaries the selector matched when it was compiled.
    """
    spec = resource.spec
    common: dict[str, Any] = {
        "name": resource.name,
        "canaries": frozenset(spec.get("selected", ())),
        "regions": frozenset(spec.get("regions", ())),
        "description": spec.get("description"),
    }
    if spec.get("schedule") is not None:
        return Window(
            **common,
            schedule=parse_schedule(spec["schedule"]),
            duration=timedelta(seconds=parse_duration(spec["duration"])),
            zone=ZoneInfo(spec.get("timezone", "UTC")),
        )
    return Window(
        **common,
        start=datetime.fromisoformat(spec["start"]),
        end=datetime.fromisoformat(spec["end"]),
    )


def windows_of(resources: Iterable[Resource]) -> list[Window]:
    """Every window among served resources, by name."""
    found = [window_of(r) for r in resources if r.kind == "Maintenance"]
    return sorted(found, key=lambda w: w.name)


def active(windows: Iterable[Window], at: datetime) -> list[Occurrence]:
    """The openings in progress at `at`, earliest end first."""
    found = []
    for window in windows:
        opening = window.open_at(at)
        if opening is not None:
            found.append(window.occurrence(*opening))
    return sorted(found, key=lambda o: (o.end, o.window))


def upcoming(
    windows: Iterable[Window],
    now: datetime,
    horizon: timedelta,
    per_window: int = MAX_UPCOMING_PER_WINDOW,
) -> list[Occurrence]:
    """The openings that start after `now` and within `horizon`, soonest first.

    Args:
        windows: the served windows.
        now: the current time.
        horizon: how far ahead to look.
        per_window: at most this many openings of one window.
    """
    found = []
    for window in windows:
        taken = 0
        for start, end in window.occurrences(now, now + horizon):
            if start <= now:
                continue  # in progress: that is `active`
            found.append(window.occurrence(start, end))
            taken += 1
            if taken >= per_window:
                break
    return sorted(found, key=lambda o: (o.start, o.window))


def in_period(windows: Iterable[Window], since: datetime, until: datetime) -> list[Occurrence]:
    """Every opening overlapping `[since, until)` (an SLA month's), in time order."""
    found = [w.occurrence(s, e) for w in windows for s, e in w.occurrences(since, until)]
    return sorted(found, key=lambda o: (o.start, o.window))


class MaintenanceIndex:
    """The windows that apply to each derived canary, built once per served revision.

    Marking a batch costs a dict lookup per derived canary of the batch; only rows of a
    canary with windows are compared with their openings.
    """

    def __init__(self, resources: Iterable[Resource]) -> None:
        listed = list(resources)
        self.windows = windows_of(listed)
        self._by_derived: dict[str, tuple[Window, ...]] = {}
        if not self.windows:
            return
        for resource in listed:
            if resource.kind != "DerivedCanary" or resource.parent is None:
                continue
            region = str(resource.spec.get("region", ""))
            applying = tuple(w for w in self.windows if w.covers(resource.parent, region))
            if applying:
                self._by_derived[resource.name] = applying

    def windows_for(self, derived: str) -> tuple[Window, ...]:
        """The windows covering one derived canary (`ns/name@agent`) in its region."""
        return self._by_derived.get(derived, ())

    def mark(self, rows: AcceptedRows) -> int:
        """Set `maintenance` on every row that started inside an opening of a window
        covering its derived canary.

        Returns:
            How many rows were marked.
        """
        if not self._by_derived or not len(rows):
            return 0
        positions: dict[str, list[int]] = {}
        for index, canary in enumerate(rows.canaries()):
            if canary in self._by_derived:
                positions.setdefault(canary, []).append(index)
        if not positions:
            return 0
        started_at = rows.started_at()
        covered = [started_at[i] for indexes in positions.values() for i in indexes]
        first, last = min(covered), max(covered) + timedelta(microseconds=1)
        # Each window's openings over the batch's span, once: canaries share windows.
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        marked: list[int] = []
        for canary, indexes in positions.items():
            openings = []
            for window in self._by_derived[canary]:
                if window.name not in spans:
                    spans[window.name] = list(window.occurrences(first, last))
                openings += spans[window.name]
            if not openings:
                continue
            starts = [started_at[i] for i in indexes]
            earliest, latest = min(starts), max(starts)
            if any(opened <= earliest and latest < closed for opened, closed in openings):
                # The usual case: the canary's rows all fall in one opening.
                marked += indexes
                continue
            marked += [
                index
                for index in indexes
                if any(opened <= started_at[index] < closed for opened, closed in openings)
            ]
        if marked:
            rows.mark_maintenance(marked)
        return len(marked)

    def silenced(self, canary: str, regions: Sequence[str], at: datetime) -> bool:
        """Whether an event about a canary is to be kept quiet at `at`.

        An event naming regions is quiet when an open window covers the canary in every one
        of them; an event naming none (a resolution) when an open window covers it in every
        region (one without a region list).
        """
        open_windows = [w for w in self.windows if canary in w.canaries and w.open_at(at)]
        if not open_windows:
            return False
        if not regions:
            return any(not w.regions for w in open_windows)
        return all(any(w.covers(canary, region) for w in open_windows) for region in regions)


def with_maintenance(
    state: CanaryState, canary: str, windows: Sequence[Window], at: datetime
) -> CanaryState:
    """A canary's status with its regions under an open window shown as under maintenance.

    Runs inside a window decide no status (they are left out, as for incidents), so a region
    in a window would drift to "no recent data": it reads "under maintenance" instead. The
    blended status does too when every region of the canary is covered.

    Args:
        state: the status `core.status.canary_status` decided.
        canary: the canary's key.
        windows: the served windows.
        at: the time the status is for.
    """
    open_now = [w for w in windows if canary in w.canaries and w.open_at(at) is not None]
    if not open_now:
        return state
    regions = dict(state.regions)
    covered = []
    for region, found in state.regions.items():
        window = next((w for w in open_now if w.covers(canary, region)), None)
        if window is not None:
            covered.append(region)
            regions[region] = found._replace(
                status=Status.UNDER_MAINTENANCE, reason=f"maintenance window {window.name}"
            )
    everywhere = [w for w in open_now if not w.regions]
    if (regions and len(covered) == len(regions)) or (not regions and everywhere):
        names = ", ".join(sorted({w.name for w in open_now}))
        return replace(
            state,
            status=Status.UNDER_MAINTENANCE,
            regions=regions,
            reason=f"maintenance window {names}",
        )
    return replace(state, regions=regions)
