"""The one way any layer says "no" to a request: an HTTP status, a message, details."""

from __future__ import annotations

from typing import Any


class RequestRefused(Exception):
    """A request that cannot be done as asked; the HTTP layer answers `status` with `message`.

    Raised by the control plane (unknown agent token), operator edits (invalid edits, regions
    still in use) and the HTTP routes themselves (bad parameters, bodies too large); the app
    factory installs the one handler that turns it into a JSON error body.
    """

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
