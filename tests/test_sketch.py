"""The site's two ways to read quantiles off histograms agree: `quantiles_sql` (DuckDB) and
`quantiles` (numpy), which the builds' open parts use."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from reconciler.core.sketch import (
    QUANTILES,
    Histogram,
    bin_of,
    merged_quantiles,
    packed,
    quantiles,
    quantiles_sql,
    value_of,
)


def _histograms(seed: int) -> list[tuple[int, int, int]]:
    """(id, bin, n) rows: keys with one run, with one bin, with a bin counted twice (two
    sources, as a window's stored counts and its open part), and wide spreads."""
    rng = random.Random(seed)
    rows = [(1, bin_of(12.0), 1), (2, bin_of(3.0), 40)]
    rows += [(3, bin_of(5.0), 2), (3, bin_of(5.0), 1), (3, bin_of(900.0), 1)]
    for key in range(4, 200):
        for _ in range(rng.randint(1, 30)):
            rows.append((key, bin_of(rng.lognormvariate(3, 1.5)), rng.randint(1, 500)))
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numpy_quantiles_equal_the_sql_ones(seed: int) -> None:
    rows = sorted(_histograms(seed))
    ids, bins, counts = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    keys, totals, values = quantiles(ids, bins, counts)

    connection = duckdb.connect()
    connection.register("counts", pa.table({"id": ids, "bin": bins, "n": counts}))
    expected = connection.execute(
        f"SELECT id, total, q FROM ({quantiles_sql('counts', 'id')}) ORDER BY id"
    ).fetchall()
    assert keys.tolist() == [row[0] for row in expected]
    assert totals.tolist() == [row[1] for row in expected]
    for index, _ in enumerate(QUANTILES):
        assert values[index].tolist() == pytest.approx([row[2][index] for row in expected])


def test_a_quantile_is_a_bin_value_or_between_two() -> None:
    # 100 runs: 95 fast (bin of 10 ms), 5 slow (bin of 1 s). p50 is the fast bin's value;
    # p99 (rank 98.01 of 0..99) is the slow one's; p95 (rank 94.05) lies 5% of the way
    # from the fast value to the slow one.
    fast, slow = bin_of(10.0), bin_of(1000.0)
    ids = np.array([7, 7], dtype=np.int64)
    _, totals, (p50, p95, p99) = quantiles(
        ids, np.array([fast, slow], dtype=np.int64), np.array([95, 5], dtype=np.int64)
    )
    assert totals.tolist() == [100]
    assert p50[0] == pytest.approx(value_of(fast))
    assert p99[0] == pytest.approx(value_of(slow))
    assert p95[0] == pytest.approx(value_of(fast) + 0.05 * (value_of(slow) - value_of(fast)))


def test_no_rows_no_keys() -> None:
    empty = np.zeros(0, dtype=np.int64)
    keys, totals, values = quantiles(empty, empty, empty)
    assert len(keys) == len(totals) == 0
    assert [len(v) for v in values] == [0, 0, 0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_histogram_merged_with_more_rows_reads_as_both_sorted_together(seed: int) -> None:
    """A builder keeps a window's histogram between builds and merges each build's open
    part into it: the quantiles equal those of both sets of rows sorted together, new keys
    (negative ids, as a build gives keys not stored yet) and sub-millisecond bins included."""
    rng = random.Random(seed)
    stored = sorted(_histograms(seed))
    more = sorted(
        {
            (rng.choice([-2, -1, 3, 5, 150, 400]), bin_of(rng.lognormvariate(1, 3)))
            for _ in range(300)
        }
    )
    more_rows = [(key, bin_, rng.randint(1, 9)) for key, bin_ in more]
    assert any(bin_ < 0 for _, bin_, _ in more_rows)  # durations under 1 ms
    ids, bins, counts = (np.array(c, dtype=np.int64) for c in zip(*stored, strict=True))
    extra = [np.array(c, dtype=np.int64) for c in zip(*more_rows, strict=True)]

    merged = merged_quantiles(
        Histogram.of(packed(ids, bins), counts), Histogram.of(packed(*extra[:2]), extra[2])
    )

    together = sorted(stored + more_rows, key=lambda row: (row[0], row[1]))
    expected = quantiles(*(np.array(c, dtype=np.int64) for c in zip(*together, strict=True)))
    assert merged[0].tolist() == expected[0].tolist()
    assert merged[1].tolist() == expected[1].tolist()
    for got, want in zip(merged[2], expected[2], strict=True):
        assert got.tolist() == want.tolist()


def _rows(rng: random.Random, keys: range, most: int, count: int) -> list[tuple[int, int, int]]:
    return [
        (key, bin_of(rng.lognormvariate(3, 1.5)), rng.randint(1, count))
        for key in keys
        for _ in range(rng.randint(0, most))
    ]


def _columns(rows: list[tuple[int, int, int]]) -> list[np.ndarray]:
    if not rows:
        return [np.zeros(0, dtype=np.int64) for _ in range(3)]
    return [np.array(c, dtype=np.int64) for c in zip(*sorted(rows), strict=True)]


@pytest.mark.parametrize(
    ("kept_keys", "kept_count", "added_keys", "added_count"),
    [
        (range(-5, 300), 400, range(-9, 310), 3),  # a build's open part: a few runs a key
        (range(300), 20, range(300), 20),  # a staged move: as much added as kept
        (range(50), 1, range(25, 75), 500),  # more added than kept, keys on one side only
        (range(0), 1, range(40), 9),  # nothing kept: a first build's open part
        (range(40), 9, range(0), 1),  # nothing added
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_merged_quantiles_equal_those_of_all_rows_together(
    kept_keys: range, kept_count: int, added_keys: range, added_count: int, seed: int
) -> None:
    rng = random.Random(seed)
    kept, added = _rows(rng, kept_keys, 30, kept_count), _rows(rng, added_keys, 6, added_count)
    ids, bins, counts = _columns(kept)
    more_ids, more_bins, more = _columns(added)

    merged = merged_quantiles(
        Histogram.of(packed(ids, bins), counts), Histogram.of(packed(more_ids, more_bins), more)
    )

    expected = quantiles(*_columns(kept + added))
    assert merged[0].tolist() == expected[0].tolist()
    assert merged[1].tolist() == expected[1].tolist()
    for got, want in zip(merged[2], expected[2], strict=True):
        assert got.tolist() == want.tolist()


def test_added_runs_faster_than_every_kept_one_come_first() -> None:
    """Half the runs are new and faster than any kept one: the median is theirs, though the
    kept histogram's median bin holds both of the ranks it would look between."""
    fast, slow = bin_of(5.0), bin_of(10.0)
    kept = Histogram.of(packed(np.array([1]), np.array([slow])), np.array([100]))
    added = Histogram.of(packed(np.array([1]), np.array([fast])), np.array([100]))

    _, totals, (p50, _, _) = merged_quantiles(kept, added)

    assert totals.tolist() == [200]
    assert p50[0] == pytest.approx(value_of(fast) + 0.5 * (value_of(slow) - value_of(fast)))


def test_a_rank_on_the_last_run_of_a_bin_reads_the_next_bin() -> None:
    """Five runs in each of two kept bins and one new slower run: rank 5 (the median of
    eleven) is the first run of the second bin, not the last of the first."""
    first, second, third = bin_of(100.0), bin_of(200.0), bin_of(400.0)
    kept = Histogram.of(packed(np.array([7, 7]), np.array([first, second])), np.array([5, 5]))
    added = Histogram.of(packed(np.array([7]), np.array([third])), np.array([1]))

    _, totals, (p50, _, p99) = merged_quantiles(kept, added)

    assert totals.tolist() == [11]
    assert p50[0] == pytest.approx(value_of(second))
    assert p99[0] == pytest.approx(value_of(second) + 0.9 * (value_of(third) - value_of(second)))
