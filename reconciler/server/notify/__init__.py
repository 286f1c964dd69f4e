"""Notifications: events routed to receivers (AlertRouting), or posted to `--notify-url` hooks."""

from __future__ import annotations

from reconciler.server.notify.hooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Hook,
    Notifier,
    parse_hooks,
    sign,
)
from reconciler.server.notify.routed import Notifications, announcer

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Hook",
    "Notifications",
    "Notifier",
    "announcer",
    "parse_hooks",
    "sign",
]
