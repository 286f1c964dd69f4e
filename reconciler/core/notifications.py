"""Notification payloads: an event's JSON or Slack text, and what each receiver is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from reconciler.core.routing import DEFAULT_SEVERITY, Notification, alert_key


def summary(event: dict[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    kind = event.get("type", "event")
    if kind == "incident_opened":
        regions = ", ".join(event.get("regions_down", [])) or "?"
        return f":red_circle: Incident opened for {event.get('canary')}: down in {regions}"
    if kind == "incident_resolved":
        text = f":large_green_circle: Incident resolved for {event.get('canary')}"
        # Under `majority`, `all` or `count` an incident resolves with regions still down;
        # a reader of the chat line alone must not take it for an all-clear.
        still_down = ", ".join(event.get("regions_down") or [])
        if not still_down:
            return text
        policy = event.get("policy")
        why = f"policy {policy} no longer holds; " if policy else ""
        return f"{text} ({why}still down: {still_down})"
    if kind == "agent_silent":
        return (
            f":mute: Agent {event.get('agent')} ({event.get('region')}) is silent: "
            f"last heard from {event.get('last_heard') or 'never'}"
        )
    if kind == "agent_recovered":
        return f":loud_sound: Agent {event.get('agent')} ({event.get('region')}) is back"
    route = event.get("route", "?")
    weights = event.get("weights") or {}
    split = ", ".join(f"{group} {weight}%" for group, weight in weights.items())
    if kind == "canary_started":
        return f":rocket: Canary started on route {route} ({split})"
    if kind == "canary_step":
        step = event.get("step")
        shown = step + 1 if isinstance(step, int) else "?"
        return f":arrow_up: Canary on route {route} at step {shown} ({split})"
    if kind == "canary_rolled_back":
        return f":rewind: Canary on route {route} rolled back: {event.get('reason', '')}".rstrip()
    if kind == "canary_completed":
        return f":white_check_mark: Canary on route {route} completed ({split})"
    if kind == "canary_paused":
        return f":pause_button: Canary on route {route} paused ({split})"
    if kind == "canary_resumed":
        return f":arrow_forward: Canary on route {route} resumed ({split})"
    return f"{kind}: {event}"


def payload(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The body posted to a webhook: the event itself, or `{"text": ...}` for Slack."""
    if fmt == "slack":
        return {"text": summary(event)}
    return event


# -- routed notifications (core/routing.py) --------------------------------------------------

# The longest texts the receivers' APIs accept.
PAGERDUTY_SUMMARY_CHARS = 1024
OPSGENIE_MESSAGE_CHARS = 130
OPSGENIE_DESCRIPTION_CHARS = 15000
OPSGENIE_PRIORITY = {"critical": "P1", "error": "P2", "warning": "P3"}


def canary_context(canary: str, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """What routes match on, added to a canary's events: namespace, labels, severity.

    The severity is the canary's `spec.severity`, else its `severity` label, else `critical`.
    """
    labels = dict((spec or {}).get("labels") or {})
    severity = (spec or {}).get("severity") or labels.get("severity") or "critical"
    return {"namespace": canary.partition("/")[0], "labels": labels, "severity": severity}


def plain_summary(event: Mapping[str, Any]) -> str:
    """The one-line summary without emoji, for mail subjects and paging systems."""
    text = summary(dict(event))
    return text.split(" ", 1)[1] if text.startswith(":") and " " in text else text


def grouped_document(notification: Notification) -> dict[str, Any]:
    """The body a routed webhook receives: the group, its status and its events."""
    return {
        "version": "1",
        "receiver": notification.receiver,
        "status": notification.status,
        "group_key": notification.group_key,
        "reminder": notification.reminder,
        "at": notification.at.isoformat().replace("+00:00", "Z"),
        "firing": list(notification.firing),
        "resolved": list(notification.resolved),
    }


def _heading(notification: Notification) -> str:
    count = len(notification.firing)
    status = f"FIRING:{count}" if count else "RESOLVED"
    return f"[{status}]" + (" (reminder)" if notification.reminder else "")


def slack_text(notification: Notification) -> str:
    """One Slack message: a heading, then a line per firing and per resolved event."""
    lines = [_heading(notification)]
    lines += [summary(dict(e)) for e in notification.firing]
    lines += [summary(dict(e)) for e in notification.resolved]
    return "\n".join(lines)


def email_subject(notification: Notification) -> str:
    """`[FIRING:2] Incident opened for web/api: down in eu-west` (the first event)."""
    first = (notification.firing or notification.resolved)[0]
    more = len(notification.firing) + len(notification.resolved) - 1
    tail = f" (+{more} more)" if more > 0 else ""
    return f"{_heading(notification)} {plain_summary(first)}{tail}"


def email_body(notification: Notification) -> str:
    """The text of a notification mail: one paragraph per event with its fields."""
    parts = [f"{_heading(notification)} for receiver {notification.receiver}", ""]
    for title, events in (("Firing", notification.firing), ("Resolved", notification.resolved)):
        if not events:
            continue
        parts.append(f"{title}:")
        for event in events:
            parts.append(f"- {plain_summary(event)}")
            for key in sorted(event):
                if key not in ("labels",):
                    parts.append(f"    {key}: {event[key]}")
        parts.append("")
    return "\n".join(parts)


def _severity(event: Mapping[str, Any], fallback: str | None) -> str:
    if fallback:
        return fallback
    value = str(event.get("severity") or DEFAULT_SEVERITY.get(str(event.get("type")), "info"))
    return value if value in ("critical", "error", "warning", "info") else "critical"


def pagerduty_event(
    event: Mapping[str, Any], action: str, routing_key: str, severity: str | None, source: str
) -> dict[str, Any] | None:
    """A PagerDuty Events API v2 body (`trigger` or `resolve`), or None for a notice.

    The dedup_key is the alert's key (`incident-12`, `agent-eu-1`), so the resolve of an
    incident closes the alert its trigger opened.
    """
    key = alert_key(event)
    if key is None:
        return None
    document: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": f"canary-reconciler/{key}",
    }
    if action == "trigger":
        payload = {
            "summary": plain_summary(event)[:PAGERDUTY_SUMMARY_CHARS],
            "source": str(event.get("canary") or event.get("agent") or source),
            "severity": _severity(event, severity),
            "timestamp": event.get("at"),
            "component": event.get("canary") or event.get("agent"),
            "group": event.get("namespace") or event.get("region"),
            "class": event.get("type"),
            "custom_details": {k: v for k, v in event.items() if v is not None},
        }
        # Optional fields are left out rather than sent as null.
        document["payload"] = {k: v for k, v in payload.items() if v is not None}
        document["client"] = source
    return document


def opsgenie_alert(
    event: Mapping[str, Any], priority: str | None, tags: tuple[str, ...]
) -> dict[str, Any] | None:
    """An Opsgenie create-alert body, aliased by the alert's key; None for a notice."""
    key = alert_key(event)
    if key is None:
        return None
    severity = str(event.get("severity") or DEFAULT_SEVERITY.get(str(event.get("type")), ""))
    details = {str(k): str(v) for k, v in event.items() if v is not None and k != "labels"}
    return {
        "message": plain_summary(event)[:OPSGENIE_MESSAGE_CHARS],
        "alias": key,
        "description": orjson.dumps(dict(event), option=orjson.OPT_INDENT_2).decode()[
            :OPSGENIE_DESCRIPTION_CHARS
        ],
        "priority": priority or OPSGENIE_PRIORITY.get(severity, "P5"),
        "source": "canary-reconciler",
        "entity": str(event.get("canary") or event.get("agent") or ""),
        "tags": [*tags, str(event.get("type"))],
        "details": details,
    }
