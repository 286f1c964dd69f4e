"""The report windows (24 h, 7 d, 30 d): where each starts and ends, and its chart frame.

Every window ends on a step boundary, some time behind the clock (`Window.settle`), so that
its figures change when a step closes rather than on every new result:

* `24h` is rolling: the 24 hours before the last 5-minute boundary, a minute behind the
  clock (`SETTLE`: results arrive a little after they start). Its chart has one point per
  complete 15-minute rollup bucket inside the window.
* `7d` and `30d` are calendar windows: today (UTC, up to the last 2-hour boundary) and the
  previous 6 or 29 days; their charts have one point per 2 and 6 hours over the whole days.

Why the long windows lag more (3 and 8 minutes): every page showing a window is rendered
again when the window moves, 1,000 pages a window at 1,000 canaries. Every 2-hour boundary
is also a 5-minute one, so with the same lag all three windows would move in the same
minute, 12 times a day, and that rebuild would redo the whole site (3,000 pages, measured
at 3.5-5 s on 2 CPUs against a target of 2 s). Lagging 7 d by 3 minutes and 30 d by 8 puts
their moves in minutes of their own, at least 2 minutes from any move of the 24-hour window
(which moves at :01, :06, :11 …), so a server rebuilding every minute redoes at most one
window's pages in a build. A 7- or 30-day figure a few minutes older is no loss.

All times here are whole seconds since the Unix epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86_400
# Results arrive a little after they start; the last minute is not reported yet (rollups,
# the 24-hour window). The long windows lag more (see above).
SETTLE = 60
# The rollup bucket: long windows' boundaries and every chart step are multiples of it.
ROLLUP_STEP = 900
# Long windows (and today's latency histogram) advance in steps of this.
LONG_STEP = 7_200


@dataclass(frozen=True)
class Window:
    """One report window.

    Attributes:
        name: the id used in page names (`24h`, `7d`, `30d`).
        label: how pages name it.
        step: chart step in seconds (a multiple of `ROLLUP_STEP`).
        end_step: the window ends on a multiple of this.
        span: length in seconds of a rolling window (`days` is None).
        days: calendar days covered (today included), or None for a rolling window.
        settle: how far behind the clock the window ends (before rounding down to a step).
    """

    name: str
    label: str
    step: int
    end_step: int
    span: int = 0
    days: int | None = None
    settle: int = SETTLE

    def bounds(self, now: int) -> tuple[int, int]:
        """The window's [start, end) at a time."""
        end = (now - self.settle) // self.end_step * self.end_step
        if self.days is None:
            return end - self.span, end
        return end // DAY * DAY - (self.days - 1) * DAY, end

    def frame(self, start: int) -> int:
        """Where the chart's first slot starts: slot i covers frame + i · step."""
        return start // self.step * self.step

    def slots(self) -> int:
        """How many chart slots the frame holds (whole days for calendar windows)."""
        if self.days is None:
            return self.span // self.step + 1  # the first and last slots may be partial
        return self.days * DAY // self.step

    @property
    def exact(self) -> bool:
        """Whether latency quantiles are exact (from raw rows) rather than from histograms."""
        return self.days is None


WINDOWS: tuple[Window, ...] = (
    Window("24h", "24 hours", step=ROLLUP_STEP, end_step=300, span=DAY),
    Window("7d", "7 days", step=7_200, end_step=LONG_STEP, days=7, settle=3 * 60),
    Window("30d", "30 days", step=21_600, end_step=LONG_STEP, days=30, settle=8 * 60),
)


def window_named(name: str) -> Window:
    """The window with this name.

    Raises:
        KeyError: there is none.
    """
    for window in WINDOWS:
        if window.name == name:
            return window
    raise KeyError(name)


def floor_to(moment: int, step: int) -> int:
    """The multiple of `step` at or before `moment`."""
    return moment // step * step
