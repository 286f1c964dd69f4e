"""When window figures are computed, staged and published, and when windows move (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.sitebuild.moves import STAGE_WITHIN, plan_steps
from reconciler.sitebuild.windows import DAY, WINDOWS, window_named

TWENTY_FOUR = window_named("24h")
SEVEN = window_named("7d")
NOON = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp())


def bounds_text(start: int, end: int) -> str:
    return f"{start}:{end}"


def published_at(moment: int) -> dict[str, str]:
    """Watermarks of a site whose windows were all published at `moment`."""
    return {f"window.{w.name}": bounds_text(*w.bounds(moment)) for w in WINDOWS}


def test_no_two_windows_move_in_the_same_minute() -> None:
    """Every page showing a window is drawn again when it moves: a minute in which two
    windows moved would redraw two thirds of the site."""
    for minute in range(2 * DAY // 60):
        now = NOON + minute * 60
        moved = [w.name for w in WINDOWS if w.bounds(now) != w.bounds(now - 60)]
        assert len(moved) <= 1, (datetime.fromtimestamp(now, UTC), moved)
    # … and none within a minute of another, so a build a little late does not meet two.
    moves = sorted(
        NOON + minute * 60
        for minute in range(2 * DAY // 60)
        for w in WINDOWS
        if w.bounds(NOON + minute * 60) != w.bounds(NOON + minute * 60 - 60)
    )
    assert min(b - a for a, b in zip(moves, moves[1:], strict=False)) >= 120


def test_the_first_build_computes_and_publishes_every_window() -> None:
    steps = plan_steps({}, NOON, None, None)
    assert [s.window.name for s in steps] == ["24h", "7d", "30d", "90d", "365d"]
    for step in steps:
        assert step.compute is not None and step.compute.old is None  # from scratch
        assert not step.stage and step.published == step.window.bounds(NOON)


def test_a_move_is_staged_then_published_the_next_minute() -> None:
    moving = NOON + 60  # 24 h ends on the 5-minute boundary before the minute
    meta = published_at(moving - 60)
    (step,) = plan_steps(meta, moving, None, moving - 60)
    assert step.window == TWENTY_FOUR and step.stage and step.published is None
    assert step.compute is not None and step.compute.old == TWENTY_FOUR.bounds(moving - 60)

    meta["window.24h.staged"] = bounds_text(step.compute.start, step.compute.end)
    (step,) = plan_steps(meta, moving + 60, None, moving)
    assert step.promote and step.compute is None
    assert step.published == TWENTY_FOUR.bounds(moving)
    assert step.chart is not None and step.chart.old == TWENTY_FOUR.bounds(moving - 60)


def test_a_builder_not_seen_for_a_while_publishes_at_once() -> None:
    moving = NOON + 60
    meta = published_at(moving - 60)
    (step,) = plan_steps(meta, moving, None, moving - STAGE_WITHIN - 1)
    assert not step.stage and step.published == TWENTY_FOUR.bounds(moving)
    (step,) = plan_steps(meta, moving, None, None)  # a one-off build
    assert not step.stage


def test_a_staging_overtaken_by_the_next_move_is_replaced_and_published() -> None:
    half_past = NOON + 30 * 60  # the long windows stay put until 14:03
    meta = published_at(half_past)
    meta["window.24h.staged"] = bounds_text(*TWENTY_FOUR.bounds(half_past + 60))
    later = half_past + 16 * 60  # the window moved again before the staging was published
    (step,) = plan_steps(meta, later, None, later - 60)
    assert not step.stage and not step.promote
    assert step.compute is not None and step.compute.old == TWENTY_FOUR.bounds(half_past + 60)
    assert step.published == TWENTY_FOUR.bounds(later)


def test_late_rows_recompute_from_scratch_and_publish() -> None:
    meta = published_at(NOON)
    start, end = SEVEN.bounds(NOON)
    steps = {s.window.name: s for s in plan_steps(meta, NOON, end - 3600, NOON - 60)}
    # Each covers the changed hour: the tiered windows too, whose stored figures hold
    # today's 2-hour blocks (read from the rollups, not the per-day tier).
    assert set(steps) == {"24h", "7d", "30d", "90d", "365d"}
    for step in steps.values():
        assert step.compute is not None and step.compute.old is None and not step.stage


def test_long_windows_move_only_by_whole_days_and_never_backwards() -> None:
    midnight = NOON + 12 * 3600 + 3 * 60  # 7 d moves 3 minutes after midnight
    meta = published_at(midnight - 60)
    (step,) = plan_steps(meta, midnight, None, None)
    assert step.window == SEVEN and step.compute is not None
    assert step.compute.left == (SEVEN.bounds(midnight - 60)[0], SEVEN.bounds(midnight)[0])
    assert step.compute.left[1] - step.compute.left[0] == DAY

    earlier = published_at(midnight + DAY)  # a clock that went back: recompute
    steps = {s.window.name: s for s in plan_steps(earlier, midnight, None, None)}
    assert all(s.compute is not None and s.compute.old is None for s in steps.values())


def test_the_long_tiered_windows_move_every_two_hours_and_are_staged() -> None:
    """90 d and 365 d end on the last 2-hour boundary, like 7 d and 30 d, each in a minute
    of its own, and their moves are staged ahead for the next build like the others'."""
    for name, lag in (("90d", 11), ("365d", 13)):
        window = window_named(name)
        moving = NOON + 2 * 3600 + lag * 60
        assert window.bounds(moving)[1] == NOON + 2 * 3600
        assert window.bounds(moving - 60)[1] == NOON
        meta = published_at(moving - 60)
        (step,) = plan_steps(meta, moving, None, moving - 60)
        assert step.window == window and step.stage and step.published is None
        assert step.compute is not None and step.compute.old == window.bounds(moving - 60)
