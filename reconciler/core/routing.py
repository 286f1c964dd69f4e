"""Alert routing decisions (pure): which routes an event takes, and when each group notifies.

Alertmanager's model, over our events. An *alert* is something that fires and later ends: an
incident (`incident_opened` → `incident_resolved`) or a silent agent (`agent_silent` →
`agent_recovered`). Other events (the `canary_*` ones) are *notices*: sent once, never
reminded of, never resolved. Routes are tried in order; the first that matches takes the event
unless it says `continue`; the default route takes what no route matched. Each route groups
what it takes by its `group_by` labels: a new group notifies after `group_wait`, a changed one
at most every `group_interval`, and a group with alerts still firing reminds every
`repeat_interval`. No clock and no I/O: the caller passes `now` and delivers what comes out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from schemas.alerting import GROUP_BY_ALL, Matcher, parse_matcher
from schemas.durations import parse_duration

# Alertmanager's defaults.
DEFAULT_GROUP_BY: tuple[str, ...] = (GROUP_BY_ALL,)
DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)

FIRING_EVENTS = {"incident_opened": "incident", "agent_silent": "agent"}
RESOLVING_EVENTS = {"incident_resolved": "incident", "agent_recovered": "agent"}
DEFAULT_SEVERITY = {
    "incident_opened": "critical",
    "incident_resolved": "critical",
    "agent_silent": "warning",
    "agent_recovered": "warning",
    "canary_rolled_back": "warning",
}

# Label values: a label may hold several (an incident down in two regions has two `region`
# values); a missing label is the empty string, as in Alertmanager.
Labels = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Route:
    """A route with its inherited timing resolved."""

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    group_interval: timedelta = DEFAULT_GROUP_INTERVAL
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL
    index: int = -1  # position in `routes`; -1 is the default route


@dataclass(frozen=True)
class RoutingTable:
    """The routes in order, the default route, and which receivers want resolved ones."""

    routes: tuple[Route, ...]
    default: Route
    send_resolved: Mapping[str, bool] = field(default_factory=dict)


def _seconds(value: Any, fallback: timedelta) -> timedelta:
    return fallback if value is None else timedelta(seconds=parse_duration(str(value)))


def _group_by(value: Any, fallback: tuple[str, ...]) -> tuple[str, ...]:
    # `[]` is not "unset": it groups everything the route takes into one group.
    return fallback if value is None else tuple(str(v) for v in value)


def routing_table(
    spec: Mapping[str, Any], receivers: Mapping[str, Mapping[str, Any]]
) -> RoutingTable:
    """Build the table from an AlertRouting resource's spec and the Receivers' specs.

    Args:
        spec: the compiled AlertRouting spec (plain data, as stored).
        receivers: Receiver specs by name.

    Returns:
        The routes with the defaults' timing inherited where a route leaves it out.
    """
    default = Route(
        receiver=str(spec["receiver"]),
        group_by=_group_by(spec.get("group_by"), DEFAULT_GROUP_BY),
        group_wait=_seconds(spec.get("group_wait"), DEFAULT_GROUP_WAIT),
        group_interval=_seconds(spec.get("group_interval"), DEFAULT_GROUP_INTERVAL),
        repeat_interval=_seconds(spec.get("repeat_interval"), DEFAULT_REPEAT_INTERVAL),
    )
    routes = []
    for index, route in enumerate(spec.get("routes") or []):
        routes.append(
            Route(
                receiver=str(route["receiver"]),
                matchers=tuple(parse_matcher(m) for m in route.get("matchers") or []),
                continue_=bool(route.get("continue", False)),
                group_by=_group_by(route.get("group_by"), default.group_by),
                group_wait=_seconds(route.get("group_wait"), default.group_wait),
                group_interval=_seconds(route.get("group_interval"), default.group_interval),
                repeat_interval=_seconds(route.get("repeat_interval"), default.repeat_interval),
                index=index,
            )
        )
    resolved = {name: bool(r.get("send_resolved", True)) for name, r in receivers.items()}
    return RoutingTable(tuple(routes), default, resolved)


def event_labels(event: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The labels routes match on: the canary's own labels, then ours, which win.

    `event` (the type), `canary` (`namespace/name`), `namespace`, `severity`, `region` (every
    region down, or the agent's), `agent`, `route`.
    """
    labels: dict[str, tuple[str, ...]] = {}
    for name, value in (event.get("labels") or {}).items():
        labels[str(name)] = (str(value),)
    kind = str(event.get("type", ""))
    labels["event"] = (kind,)
    canary = event.get("canary")
    if canary:
        labels["canary"] = (str(canary),)
        namespace = event.get("namespace") or str(canary).partition("/")[0]
        labels["namespace"] = (str(namespace),)
    severity = (
        event.get("severity")
        or labels.get("severity", ("",))[0]
        or DEFAULT_SEVERITY.get(kind, "info")
    )
    labels["severity"] = (str(severity),)
    regions = list(event.get("regions_down") or [])
    if event.get("region"):
        regions.append(event["region"])
    if regions:
        labels["region"] = tuple(sorted({str(r) for r in regions}))
    for name in ("agent", "route"):
        if event.get(name):
            labels[name] = (str(event[name]),)
    return labels


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(matcher: Matcher, labels: Labels) -> bool:
    """Whether a matcher accepts a label set.

    `=` and `=~` (anchored, as in Alertmanager) need one value of the label to match; `!=` and
    `!~` need none to. A missing label counts as the empty string.
    """
    values = labels.get(matcher.name) or ("",)
    if matcher.op == "=":
        return matcher.value in values
    if matcher.op == "!=":
        return matcher.value not in values
    pattern = _regex(matcher.value)
    found = any(pattern.fullmatch(v) for v in values)
    return found if matcher.op == "=~" else not found


def select_routes(table: RoutingTable, labels: Labels) -> list[Route]:
    """The routes an event takes: in order, stopping at the first match without `continue`;
    the default route when none matched."""
    taken = []
    for route in table.routes:
        if all(matches(m, labels) for m in route.matchers):
            taken.append(route)
            if not route.continue_:
                break
    return taken or [table.default]


def alert_key(event: Mapping[str, Any]) -> str | None:
    """The identity of the alert an event fires or resolves; None for a notice.

    Incidents are keyed by their id (the incident's number survives restarts), falling back
    to the canary; silent agents by the agent.
    """
    kind = str(event.get("type", ""))
    family = FIRING_EVENTS.get(kind) or RESOLVING_EVENTS.get(kind)
    if family == "incident":
        incident = event.get("incident")
        return f"incident-{incident}" if incident is not None else f"canary-{event.get('canary')}"
    if family == "agent":
        return f"agent-{event.get('agent')}"
    return None


@dataclass
class Alert:
    """An alert (or notice) inside a group, with what has been said of it."""

    key: str
    event: dict[str, Any]
    firing: bool
    notice: bool = False
    notified: bool = False  # its current state was sent


@dataclass
class Group:
    """Alerts one route groups together for one receiver."""

    key: str
    route: Route
    alerts: dict[str, Alert] = field(default_factory=dict)
    flush_at: datetime | None = None  # something changed: notify then
    last_flush: datetime | None = None


@dataclass(frozen=True)
class Notification:
    """What one receiver is told about one group at one time."""

    receiver: str
    group_key: str
    firing: tuple[dict[str, Any], ...]
    resolved: tuple[dict[str, Any], ...]
    reminder: bool
    at: datetime

    @property
    def status(self) -> str:
        """`firing` while any alert of the group fires, else `resolved`."""
        return "firing" if self.firing else "resolved"


def _group_key(route: Route, labels: Labels, key: str) -> str:
    if GROUP_BY_ALL in route.group_by:
        return f"{route.index}:{route.receiver}:{key}"
    values = ",".join(f"{name}={'|'.join(labels.get(name, ()))}" for name in route.group_by)
    return f"{route.index}:{route.receiver}:{{{values}}}"


class Dispatcher:
    """Groups routed events and says when each group notifies. Pure: `now` is passed in."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.groups: dict[str, Group] = {}
        self._notices = 0

    def replace_table(self, table: RoutingTable) -> None:
        """Take a new revision's routing; groups of routes that still exist keep their state.

        A group is kept when a route at the same position sends to the same receiver; its
        timing becomes the new route's.
        """
        self.table = table
        by_slot = {(r.index, r.receiver): r for r in (*table.routes, table.default)}
        for key, group in list(self.groups.items()):
            route = by_slot.get((group.route.index, group.route.receiver))
            if route is None:
                del self.groups[key]
            else:
                group.route = route

    def add(self, event: Mapping[str, Any], now: datetime) -> list[str]:
        """Route one event into its groups; returns the keys of the groups it joined.

        An event of an alert some group already holds (its resolve, say) goes to exactly
        those groups, whatever its labels say now: a resolve names no region down, and the
        canary's labels may have been edited or the canary removed since it fired, yet the
        receivers that were told it fires must be told it ended, and the group that holds it
        must stop reminding of it. Only an alert no group holds is routed by its labels.
        """
        key = alert_key(event)
        notice = key is None
        if key is None:
            self._notices += 1
            key = f"notice-{self._notices}"
        firing = notice or str(event.get("type")) in FIRING_EVENTS
        holding = [] if notice else self._holding(key)
        if holding:
            targets = [(group.route, group.key) for group in holding]
        else:
            labels = event_labels(event)
            targets = [
                (route, _group_key(route, labels, key))
                for route in select_routes(self.table, labels)
            ]
        joined = []
        for route, group_key in targets:
            group = self.groups.get(group_key)
            if group is None:
                if not firing:
                    # The alert fired before this group existed (a restart, a new route):
                    # still say it ended, at once.
                    group = Group(group_key, route, flush_at=now)
                else:
                    group = Group(group_key, route, flush_at=now + route.group_wait)
                self.groups[group_key] = group
            elif group.flush_at is None:
                earliest = (group.last_flush or now) + route.group_interval
                group.flush_at = max(now, earliest)
            group.alerts[key] = Alert(key, dict(event), firing, notice)
            joined.append(group_key)
        return joined

    def _holding(self, key: str) -> list[Group]:
        """The groups that hold an alert (firing, or resolved and not yet said), by key."""
        return [self.groups[k] for k in sorted(self.groups) if key in self.groups[k].alerts]

    def due(self, now: datetime) -> list[Notification]:
        """The notifications due at `now`, and the groups' state moved past them."""
        sent = []
        for key in sorted(self.groups):
            group = self.groups[key]
            reminder = False
            if group.flush_at is None or group.flush_at > now:
                reminding = (
                    group.last_flush is not None
                    and any(a.firing and not a.notice for a in group.alerts.values())
                    and group.last_flush + group.route.repeat_interval <= now
                )
                if not reminding:
                    continue
                reminder = True
            notification = self._flush(group, now, reminder)
            if notification is not None:
                sent.append(notification)
            if not group.alerts:
                del self.groups[key]
        return sent

    def _flush(self, group: Group, now: datetime, reminder: bool) -> Notification | None:
        wants_resolved = self.table.send_resolved.get(group.route.receiver, True)
        firing = [a for a in group.alerts.values() if a.firing]
        resolved = [a for a in group.alerts.values() if not a.firing and not a.notified]
        changed = any(not a.notified for a in firing) or (wants_resolved and resolved)
        group.flush_at = None
        group.last_flush = now
        for alert in firing:
            alert.notified = True
        for alert in [a for a in group.alerts.values() if not a.firing or a.notice]:
            del group.alerts[alert.key]  # ended or said once: nothing more to say of it
        if not changed and not reminder:
            return None
        return Notification(
            group.route.receiver,
            group.key,
            tuple(a.event for a in firing),
            tuple(a.event for a in resolved) if wants_resolved else (),
            reminder,
            now,
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """The groups as plain data, to store (`restore` takes it back)."""
        return [
            {
                "key": group.key,
                "route": [group.route.index, group.route.receiver],
                "flush_at": _iso(group.flush_at),
                "last_flush": _iso(group.last_flush),
                "alerts": [
                    [a.key, a.event, a.firing, a.notice, a.notified] for a in group.alerts.values()
                ],
            }
            for group in self.groups.values()
        ]

    def restore(self, stored: Iterable[Mapping[str, Any]]) -> int:
        """Take back stored groups whose route still exists (same position and receiver).

        Returns:
            How many groups were restored.
        """
        by_slot = {(r.index, r.receiver): r for r in (*self.table.routes, self.table.default)}
        restored = 0
        for item in stored:
            index, receiver = item["route"]
            route = by_slot.get((int(index), str(receiver)))
            if route is None:
                continue
            group = Group(
                str(item["key"]),
                route,
                flush_at=_parse(item.get("flush_at")),
                last_flush=_parse(item.get("last_flush")),
            )
            for key, event, firing, notice, notified in item.get("alerts", []):
                group.alerts[key] = Alert(
                    key, dict(event), bool(firing), bool(notice), bool(notified)
                )
            self.groups[group.key] = group
            restored += 1
        return restored

    def next_due(self) -> datetime | None:
        """When `due` next has something to return, if ever without new events."""
        times = []
        for group in self.groups.values():
            if group.flush_at is not None:
                times.append(group.flush_at)
            elif group.last_flush is not None and any(
                a.firing and not a.notice for a in group.alerts.values()
            ):
                times.append(group.last_flush + group.route.repeat_interval)
        return min(times, default=None)


def without_ended(
    stored: Iterable[Mapping[str, Any]], open_incidents: Collection[int]
) -> list[dict[str, Any]]:
    """Stored groups (`Dispatcher.snapshot`) without the firing alerts of incidents that are
    no longer open, and without groups left empty. Groups stored by an older version may
    hold such alerts (their resolve was routed to other groups), and would remind of them
    for ever.

    Args:
        stored: the groups as stored.
        open_incidents: the ids of the incidents open now.
    """
    kept = []
    for item in stored:
        alerts = [
            alert
            for alert in item.get("alerts", [])
            if not (alert[2] and _ended(str(alert[0]), open_incidents))
        ]
        if alerts:
            kept.append({**item, "alerts": alerts})
    return kept


def _ended(key: str, open_incidents: Collection[int]) -> bool:
    prefix, _, number = key.partition("-")
    return prefix == "incident" and number.isdigit() and int(number) not in open_incidents


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def route_events(
    table: RoutingTable, events: Iterable[Mapping[str, Any]], now: datetime
) -> Sequence[Notification]:
    """Route events and flush what is due at once (for previews and tests)."""
    dispatcher = Dispatcher(table)
    for event in events:
        dispatcher.add(event, now)
    return dispatcher.due(now)
