"""Pausing the garbage collector around a build, and collecting what it set aside later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from reconciler.core.collector import collect_kept, collector_paused


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture(autouse=True)
def _nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[_Node]:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_a_paused_block_keeps_its_objects_out_of_the_next_pass_until_collected() -> None:
    with collector_paused(keep=True):
        kept = [{"row": index} for index in range(1_000)]
        cycle = _cycle()  # garbage already: only the collector frees a cycle
    assert gc.get_freeze_count() >= len(kept)
    gc.collect()
    assert cycle() is not None  # set aside: not even a full pass looks at it
    collect_kept()
    assert cycle() is None
    assert gc.get_freeze_count() >= len(kept)  # the survivors are set aside again


def test_without_keep_the_collector_frees_the_block_s_garbage_as_usual() -> None:
    with collector_paused():
        cycle = _cycle()
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.collect()
    assert cycle() is None
