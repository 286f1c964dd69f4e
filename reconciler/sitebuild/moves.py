"""When a window's figures are computed, and when its pages show them (pure decisions).

A window's move costs twice: computing its figures (DuckDB, 0.3-0.5 s at 1,000 canaries)
and drawing again every page that shows the window (1,000 pages, about as long, when no
new result would have redrawn them anyway). A builder that rebuilds every minute splits the two:
the build in which a window moves computes its figures and keeps them aside (*staged*), and
the next build publishes them, the pages following. The site stays consistent meanwhile,
since pages only ever read published figures: they show the previous bounds a minute longer.
A builder whose previous build is older than `STAGE_WITHIN` (a one-off `reconcile site
build`, a server that was stopped) publishes at once: nothing says another build will come.

    build at 12:01   24h moves to end at 12:00: figures computed, staged
    build at 12:02   staged figures published; the 24h pages are drawn again
    build at 12:03   7d would move here if it were a 2-hour boundary (windows.py)

The 90- and 365-day windows are staged the same way (at 11 and 13 minutes past each 2-hour
boundary); their pages, which show what changes over days (`canary_page.summary`), are
drawn again only when something they print changed.

Whether a figure can be moved from the last computed bounds rather than recomputed is
decided here too (`Move.old`); `figures.py` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.sitebuild.windows import DAY, WINDOWS, Window

# Stage only when the previous build was this recent (s): builds come every minute.
STAGE_WITHIN = 150

Bounds = tuple[int, int]


@dataclass(frozen=True)
class Move:
    """Figures to compute for new bounds, from old ones when they can be moved."""

    window: Window
    start: int
    end: int
    old: Bounds | None  # None: recompute from scratch

    @property
    def entered(self) -> Bounds:
        """The span that entered the window: [old end, end)."""
        assert self.old is not None
        return self.old[1], self.end

    @property
    def left(self) -> Bounds:
        """The span that left the window: [old start, start)."""
        assert self.old is not None
        return self.old[0], self.start


@dataclass(frozen=True)
class Step:
    """What a refresh does to one window.

    Attributes:
        window: the window.
        compute: figures to compute (into the staged or the published rows), or None.
        stage: keep the computed figures aside for the next build.
        promote: publish the figures staged by an earlier build.
        chart: when figures are published, how the chart points move to their bounds.
    """

    window: Window
    compute: Move | None
    stage: bool
    promote: bool
    chart: Move | None

    @property
    def published(self) -> Bounds | None:
        """The bounds published by this step (None: the published figures stay)."""
        return None if self.chart is None else (self.chart.start, self.chart.end)


def parse(text: str | None) -> Bounds | None:
    """Bounds stored as `start:end` (empty or None: none)."""
    if not text:
        return None
    start, end = (int(part) for part in text.split(":"))
    return start, end


def movable(window: Window, old: Bounds | None, new: Bounds, late_from: int | None) -> bool:
    """Whether figures for `new` can be moved from those for `old`: the window only went
    forward and still overlaps itself, late rows changed nothing before the old end, and
    (7 d, 30 d, 90 d, 365 d) both starts are on a day, so the days that left are whole."""
    return (
        old is not None
        and old[0] <= new[0] < old[1] <= new[1]
        and (late_from is None or late_from >= old[1])
        and (window.days is None or (old[0] % DAY == 0 and new[0] % DAY == 0))
    )


def plan_steps(
    meta: dict[str, str],
    now: int,
    late_from: int | None,
    previous_build: int | None,
    windows: tuple[Window, ...] = WINDOWS,
    tier_late_from: int | None = None,
) -> list[Step]:
    """What to do with each window at `now`, from the stored bounds (`window.<name>`
    published, `window.<name>.staged`).

    Args:
        meta: the site's watermarks.
        now: the build's clock (s).
        late_from: the earliest time late rows changed (s), or None.
        previous_build: when the previous build ran (s), or None.
        windows: the windows.
        tier_late_from: the earliest day (s) whose per-day tier rows late rows changed, or
            None: the tiered windows take the earlier of it and `late_from`.
    """
    rollup_late_from = late_from
    staging = previous_build is not None and 0 <= now - previous_build <= STAGE_WITHIN
    steps = []
    for window in windows:
        stage = staging
        late_from = rollup_late_from
        if window.tier and tier_late_from is not None:
            # Whole days from the tier, today's blocks from the rollups (`tiered.py`).
            late_from = min(tier_late_from, late_from if late_from is not None else tier_late_from)
        bounds = window.bounds(now)
        published = parse(meta.get(f"window.{window.name}"))
        staged = parse(meta.get(f"window.{window.name}.staged"))
        latest = staged or published
        late = late_from is not None and late_from < bounds[1]
        # The chart points follow the published figures, from the published bounds.
        chart = moved(window, published, bounds, late_from)
        if late or published is None:
            steps.append(Step(window, Move(window, *bounds, None), False, False, chart))
        elif staged == bounds:
            steps.append(Step(window, None, False, True, chart))
        elif latest != bounds:
            compute = moved(window, latest, bounds, late_from)
            # Staged figures not published soon enough (builds came further apart) are
            # replaced, and the new ones published at once.
            if stage and staged is None:
                steps.append(Step(window, compute, True, False, None))
            else:
                steps.append(Step(window, compute, False, False, chart))
    return steps


def moved(window: Window, old: Bounds | None, new: Bounds, late_from: int | None) -> Move:
    """The move of a window from `old` to `new` bounds: from `old` when `movable`."""
    return Move(window, *new, old if movable(window, old, new, late_from) else None)
