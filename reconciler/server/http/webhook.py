"""The git webhook's checks: GitHub's HMAC signature, and a memory of deliveries against replay."""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from datetime import datetime, timedelta

SIGNATURE_HEADER = "x-hub-signature-256"
# GitHub, Gitea and Gogs each name the delivery in a header of their own (not signed).
DELIVERY_HEADERS = ("x-github-delivery", "x-gitea-delivery", "x-gogs-delivery")
# Deliveries remembered at most; beyond, the oldest are forgotten first.
MAX_REMEMBERED = 10_000


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.

    Compared as bytes: `hmac.compare_digest` refuses str with non-ASCII characters (a header
    holding byte 0xff arrives as '\xff'), and such a header is a wrong signature, not an error.
    """
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    presented = header[7:].encode("utf-8", "surrogatepass")
    return hmac.compare_digest(presented, expected.encode())


class ReplayGuard:
    """Remembers the signed deliveries of the last `window`, so each is acted on once.

    The signature is the HMAC of the body, so a replayed body carries the same one, whatever
    delivery id a replayer puts beside it (delivery ids are not signed); two different pushes
    never share a body. The clock is passed in.
    """

    def __init__(self, window: timedelta, capacity: int = MAX_REMEMBERED) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def first_time(self, signature: str, now: datetime) -> datetime | None:
        """Record a delivery; None the first time in the window, else when it was first seen."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.window:
                break
            del self._seen[oldest]
        earlier = self._seen.get(signature)
        if earlier is not None:
            return earlier
        if len(self._seen) >= self.capacity:
            self._seen.popitem(last=False)
        self._seen[signature] = now
        return None
