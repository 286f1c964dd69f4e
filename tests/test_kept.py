"""What a long-lived site builder keeps between builds is read again when its token changes."""

from __future__ import annotations

from reconciler.sitebuild.kept import Kept, new_token


def test_a_value_is_read_once_per_token() -> None:
    kept, reads = Kept(), []

    def read() -> int:
        reads.append(1)
        return len(reads)

    first = new_token()
    assert kept.get("whist.24h", first, read) == 1
    assert kept.get("whist.24h", first, read) == 1  # kept
    assert kept.get("whist.7d", first, read) == 2  # another name, read
    assert kept.get("whist.24h", new_token(), read) == 3  # rows rewritten: read again
    assert len(kept) == 2


def test_without_a_token_rows_are_read_every_time() -> None:
    kept, reads = Kept(), []

    def read() -> int:
        reads.append(1)
        return len(reads)

    assert [kept.get("series.24h", token, read) for token in (None, "", None)] == [1, 2, 3]
    assert len(kept) == 0
