"""Why a demo stops early."""

from __future__ import annotations


class DemoError(Exception):
    """Something the demo needs cannot be set up; the message says what and how to fix it."""


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Ctrl-C, SIGTERM or the end of --duration arrived while the demo was starting."""
