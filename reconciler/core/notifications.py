"""Notification payloads: the JSON document of an event, or a Slack-compatible message."""

from __future__ import annotations

from typing import Any


def summary(event: dict[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    kind = event.get("type", "event")
    if kind == "incident_opened":
        regions = ", ".join(event.get("regions_down", [])) or "?"
        return f":red_circle: Incident opened for {event.get('canary')}: down in {regions}"
    if kind == "incident_resolved":
        return f":large_green_circle: Incident resolved for {event.get('canary')}"
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
