"""Two pieces of a site build run side by side (`sitebuild/side_by_side.py`)."""

from __future__ import annotations

import sys
import threading

import pytest

from reconciler.sitebuild.side_by_side import SWITCH_INTERVAL, side_by_side


def test_both_results_come_back_and_the_background_ran_in_another_thread() -> None:
    here = threading.get_ident()
    background, foreground = side_by_side(threading.get_ident, lambda: "rest")
    assert foreground == "rest"
    assert background != here


def test_an_error_in_the_background_is_raised_once_the_foreground_finished() -> None:
    finished: list[str] = []

    def fail() -> None:
        raise ValueError("the open parts failed")

    def work() -> str:
        finished.append("foreground")
        return "rest"

    with pytest.raises(ValueError, match="the open parts failed"):
        side_by_side(fail, work)
    assert finished == ["foreground"]


def test_an_error_in_the_foreground_waits_for_the_background_to_end() -> None:
    release = threading.Event()
    ended: list[str] = []

    def slow() -> None:
        release.wait(10)
        ended.append("background")

    def fail() -> None:
        release.set()
        raise RuntimeError("statuses failed")

    with pytest.raises(RuntimeError, match="statuses failed"):
        side_by_side(slow, fail)
    assert ended == ["background"]  # not left running behind the error


def test_the_switch_interval_is_short_while_both_run_and_restored_after() -> None:
    before = sys.getswitchinterval()
    seen = side_by_side(sys.getswitchinterval, sys.getswitchinterval)
    assert seen == pytest.approx((SWITCH_INTERVAL, SWITCH_INTERVAL))
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError):
        side_by_side(lambda: None, _raise)
    assert sys.getswitchinterval() == before


def test_overlapping_calls_restore_the_switch_interval_after_the_last() -> None:
    before = sys.getswitchinterval()
    inside, release = threading.Event(), threading.Event()
    during: list[float] = []

    def other_build() -> None:
        def hold() -> None:
            inside.set()
            release.wait(10)

        side_by_side(lambda: None, hold)

    thread = threading.Thread(target=other_build)
    thread.start()
    assert inside.wait(10)
    side_by_side(lambda: None, lambda: None)  # starts and ends while the other runs
    during.append(sys.getswitchinterval())
    release.set()
    thread.join(10)
    assert during == pytest.approx([SWITCH_INTERVAL])
    assert sys.getswitchinterval() == before


def _raise() -> None:
    raise RuntimeError("foreground")
