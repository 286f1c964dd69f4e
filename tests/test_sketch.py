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

    merged = merged_quantiles(packed(ids, bins), counts, *extra)

    together = sorted(stored + more_rows, key=lambda row: (row[0], row[1]))
    expected = quantiles(*(np.array(c, dtype=np.int64) for c in zip(*together, strict=True)))
    assert merged[0].tolist() == expected[0].tolist()
    assert merged[1].tolist() == expected[1].tolist()
    for got, want in zip(merged[2], expected[2], strict=True):
        assert got.tolist() == want.tolist()
