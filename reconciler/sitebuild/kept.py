"""Stored rows a long-lived builder keeps between builds, under the token they were written with.

A server rebuilds every minute with one `SiteBuilder`. Between two moves of a window, its
latency histogram (`site_whist`) and its joined chart series (`site_series`) stay as they
are, yet every build read them whole: 0.1-0.2 s at 1,000 canaries. Whatever writes one of
them also writes a fresh token for it into `site_meta` (`new_token`), in the same
transaction; a build reads the token, and reads the rows again only when the token is one
this builder has not seen. A token is random, so rows of another state file, or of tables
dropped and rebuilt, never pass for kept ones. No token (a state file from before tokens,
or a builder keeping nothing): the rows are read every time.

A window's move staged between builds (`moves.py`) moves its histogram then, and joins the
series it will have once published under a token of their own, which the build publishing
them adopts as the series' token. `SiteBuilder.stage_ahead` reads both right away, so the
build publishing the move reads neither.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def new_token() -> str:
    """A token for rows just written (a `site_meta` value)."""
    return uuid.uuid4().hex


def histogram_token(window: str) -> str:
    """The `site_meta` key of a window's histogram token."""
    return f"window.{window}.whist"


def days_token() -> str:
    """The `site_meta` key of the daily histograms' token (`rollups.update`)."""
    return "hist.token"


def months_token() -> str:
    """The `site_meta` key of the SLA months' token (`sla.refresh_months`)."""
    return "months.token"


def series_token(window: str) -> str:
    """The `site_meta` key of a window's chart series token."""
    return f"window.{window}.series"


class Kept:
    """Values derived from stored rows, one per name, each with the token it was read under
    (a build reads some in two threads: `side_by_side.py`)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, Any]] = {}
        self.reads = 0  # values read under a token (not kept from before)
        self._counting = threading.Lock()

    def get(self, name: str, token: str | None, read: Callable[[], T]) -> T:
        """The value kept under `name` if it was read under `token`; else `read()` (kept
        from now on when there is a token)."""
        if not token:
            return read()
        kept = self._values.get(name)
        if kept is not None and kept[0] == token:
            return cast(T, kept[1])
        value = read()
        with self._counting:
            self.reads += 1
        self._values[name] = (token, value)
        return value

    def holds(self, name: str, token: str | None) -> bool:
        """Whether the value kept under `name` was read under `token` (None: never)."""
        kept = self._values.get(name)
        return bool(token) and kept is not None and kept[0] == token

    def __len__(self) -> int:
        return len(self._values)
