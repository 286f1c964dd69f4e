"""The report windows (24 h, 7 d, 30 d, 90 d, 365 d): where each starts and ends, and its
chart frame.

Every window's stored figures end on a step boundary, some time behind the clock
(`Window.settle`), so that they are moved when a step closes rather than on every new result
(`figures.py`); what started since that end (the window's *open part*) is added at every
build from raw rows (`live.py`), so that pages show every result up to the build:

* `24h` is rolling: stored up to the last 15-minute boundary a minute behind the clock
  (`SETTLE`: results arrive a little after they start), from 24 hours before it. Its chart
  has one point per 15-minute rollup bucket, the open ones included.
* `7d` and `30d` are calendar windows: today (UTC) and the previous 6 or 29 days, stored up
  to the last 2-hour boundary; their charts have one point per 2 and 6 hours over whole days.

Why the long windows lag more (3 and 8 minutes): moving a window computes its stored
figures again (`figures.py`, 0.3-0.7 s at 1,000 canaries). Every 2-hour boundary is also a
15-minute one, so with the same lag all three windows would move in the same minute, 12
times a day. Lagging 7 d by 3 minutes and 30 d by 8 puts their moves in minutes of their
own, at least 2 minutes from any move of the 24-hour window (which moves at :01, :16, :31,
:46), so a server rebuilding every minute moves at most one window in a build. The lag does
not show: the open part covers it.

`90d` and `365d` are calendar windows too, stored up to the last 2-hour boundary like 7 d
and 30 d (11 and 13 minutes behind: moves in minutes of their own, at least two minutes from
any other, staged ahead like theirs, `moves.py`); their stored figures are the whole days
before today from the per-day tier (`store/days.py`, `tiered.py`) plus today's complete
2-hour blocks from the rollups and the daily histogram, and their open part is the raw rows
since the boundary that the other windows read anyway. Their charts have one point per day.
(Their open part used to be the whole of today, recomputed at every build from the rollup
buckets since midnight and today's histogram: 0.3-0.6 s a build at 1,000 canaries.)

All times here are whole seconds since the Unix epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86_400
# Results arrive a little after they start: the rollups settle a bucket a minute after it
# closes, and the 24-hour window moves then. The long windows lag more (see above).
SETTLE = 60
# The rollup bucket: long windows' boundaries and every chart step are multiples of it.
ROLLUP_STEP = 900
# Long windows (and today's latency histogram) advance in steps of this.
LONG_STEP = 7_200


@dataclass(frozen=True)
class Window:
    """One report window.

    Attributes:
        name: the id used in page names (`24h`, `7d`, `30d`, `90d`, `365d`).
        label: how pages name it.
        step: chart step in seconds (a multiple of `ROLLUP_STEP`).
        end_step: the window ends on a multiple of this.
        span: length in seconds of a rolling window (`days` is None).
        days: calendar days covered (today included), or None for a rolling window.
        settle: how far behind the clock the window ends (before rounding down to a step).
        tier: stored figures come from the per-day tier (whole days), not the rollups.
    """

    name: str
    label: str
    step: int
    end_step: int
    span: int = 0
    days: int | None = None
    settle: int = SETTLE
    tier: bool = False

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
        """How many chart slots the frame holds (whole days for calendar windows).

        A rolling window's frame has two slots beyond its stored end: the open part (results
        since the end, which lags the clock by up to 16 minutes) is drawn there.
        """
        if self.days is None:
            return self.span // self.step + 2
        return self.days * DAY // self.step


WINDOWS: tuple[Window, ...] = (
    Window("24h", "24 hours", step=ROLLUP_STEP, end_step=ROLLUP_STEP, span=DAY),
    Window("7d", "7 days", step=7_200, end_step=LONG_STEP, days=7, settle=3 * 60),
    Window("30d", "30 days", step=21_600, end_step=LONG_STEP, days=30, settle=8 * 60),
    Window("90d", "90 days", step=DAY, end_step=LONG_STEP, days=90, settle=11 * 60, tier=True),
    Window("365d", "365 days", step=DAY, end_step=LONG_STEP, days=365, settle=13 * 60, tier=True),
)
# The windows kept from the rollups (every one but the tiered).
ROLLUP_WINDOWS = tuple(window for window in WINDOWS if not window.tier)


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
