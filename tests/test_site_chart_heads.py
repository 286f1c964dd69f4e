"""A chart drawn from a head kept between builds is the chart drawn whole, byte for byte.

The head (`charts.draw_head`) holds the stored points before the window's seam; each build
adds the points from the seam on. Series with gaps, lone points, tails that start at the seam
or after a gap, regions with no tail or no stored points: the two ways agree on every one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from reconciler.sitebuild.charts import Points, draw_head, latency_chart
from reconciler.sitebuild.windows import WINDOWS, Window

DAY_WINDOW = WINDOWS[0]  # 24 h: 98 slots of 15 minutes
START = 1_764_547_200  # a 15-minute boundary


def _points(slots: Sequence[int], rng: random.Random) -> Points:
    values = [round(rng.uniform(5, 900), 1) for _ in slots]
    run = bool(slots) and slots[-1] - slots[0] == len(slots) - 1
    return Points(
        range(slots[0], slots[-1] + 1) if run else list(slots),
        ",".join(f"{v:.1f}" for v in values),
        max(values),
        values[-1],
    )


def _chart(
    window: Window,
    regions: list[str],
    stored: dict[str, Points],
    tails: dict[str, Points],
    at: int | None,
) -> tuple[str, str]:
    head = None if at is None else draw_head(window, START, regions, stored, at)
    chart = latency_chart(window, START, regions, stored, tails, "c", "p95", head)
    return str(chart.svg), str(chart.body)


def _series(rng: random.Random, below: int, above: int, gaps: bool) -> list[int]:
    slots = [s for s in range(below, above) if not gaps or rng.random() > 0.3]
    return slots


@pytest.mark.parametrize("seed", range(40))
def test_a_chart_with_its_head_drawn_ahead_is_the_chart_drawn_whole(seed: int) -> None:
    rng = random.Random(seed)
    at = rng.randint(1, 96)  # the seam
    regions = ["eu-1", "us-1", "ap-1"]
    stored: dict[str, Points] = {}
    tails: dict[str, Points] = {}
    for region in regions:
        gaps = rng.random() < 0.5
        if rng.random() < 0.85:
            # Stored slots end before the seam, or hold it and the slot after (a region
            # whose tail starts later).
            slots = _series(rng, rng.randint(0, at), at + rng.randint(0, 2), gaps)
            if slots:
                stored[region] = _points(slots, rng)
        if rng.random() < 0.8:
            first = at + (rng.randint(1, 2) if rng.random() < 0.3 else 0)
            slots = _series(rng, first, first + rng.randint(1, 3), gaps and rng.random() < 0.3)
            if slots:
                tails[region] = _points(slots, rng)

    assert _chart(DAY_WINDOW, regions, stored, tails, at) == _chart(
        DAY_WINDOW, regions, stored, tails, None
    )


def test_a_lone_point_is_a_dot_and_a_run_is_a_line() -> None:
    """Each run of consecutive slots is one subpath; a run of one point ends with a
    zero-length segment, which round caps draw as a dot."""
    rng = random.Random(1)
    stored = {"eu-1": _points([0, 1, 2, 5, 8, 9], rng)}
    svg, _ = _chart(DAY_WINDOW, ["eu-1"], stored, {}, None)
    path = svg.split(' d="')[1].split('"')[0]
    assert [part.count("L") for part in path.split("M")[1:]] == [2, 0, 1]
    assert path.count("h0") == 1 and path.split("M")[2].endswith("h0")


def test_a_head_drawn_for_other_regions_is_not_used() -> None:
    """A region that appeared since the head was drawn: the chart is drawn whole."""
    rng = random.Random(2)
    stored = {"eu-1": _points(list(range(10)), rng)}
    head = draw_head(DAY_WINDOW, START, ["eu-1"], stored, 10)
    regions = ["eu-1", "us-1"]
    tails = {"us-1": _points([10], rng)}
    with_head = latency_chart(DAY_WINDOW, START, regions, stored, tails, "c", "p95", head)
    whole = latency_chart(DAY_WINDOW, START, regions, stored, tails, "c", "p95")
    assert (str(with_head.svg), str(with_head.body)) == (str(whole.svg), str(whole.body))
    assert 'data-region="us-1"' in str(whole.svg)
