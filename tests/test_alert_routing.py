"""Alert routing decisions (pure): matchers, first match and continue, grouping, reminders,
resolved notifications, and what the loader says of bad routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.documents import SourceFile, git_blob_sha
from reconciler.core.load import load_config
from reconciler.core.routing import (
    Dispatcher,
    Notification,
    event_labels,
    matches,
    routing_table,
    select_routes,
    without_ended,
)
from schemas.alerting import parse_matcher

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
RECEIVERS: dict[str, dict[str, Any]] = {
    "default": {},
    "pager": {},
    "chat": {"send_resolved": False},
    "mail": {},
}


def opened(canary: str = "shop/checkout", incident: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "incident_opened",
        "incident": incident,
        "canary": canary,
        "regions_down": extra.pop("regions", ["eu-west"]),
        "labels": extra.pop("labels", {}),
        **extra,
    }


def resolved(canary: str = "shop/checkout", incident: int = 1) -> dict[str, Any]:
    return {"type": "incident_resolved", "incident": incident, "canary": canary}


def table(routes: list[dict[str, Any]], **defaults: Any) -> Any:
    spec = {"receiver": "default", "group_wait": "0s", **defaults, "routes": routes}
    return routing_table(spec, RECEIVERS)


def receivers_of(routes: list[dict[str, Any]], event: dict[str, Any]) -> list[str]:
    return [r.receiver for r in select_routes(table(routes), event_labels(event))]


# -- matchers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "event", "expected"),
    [
        ('severity="critical"', opened(), True),  # incidents default to critical
        ("severity=warning", opened(), False),
        ("severity!=warning", opened(), True),
        ('severity!="critical"', opened(), False),
        ('namespace=~"sh.*"', opened(), True),
        ('namespace=~"h.*"', opened(), False),  # anchored, as in Alertmanager
        ('namespace!~"pay.*|shop"', opened(), False),
        ('namespace!~"pay.*"', opened(), True),
        ('canary="shop/checkout"', opened(), True),
        ("event=incident_opened", opened(), True),
        ('event=~"incident_.*"', resolved(), True),
        ('event=~"agent_.*"', opened(), False),
        ("team=payments", opened(labels={"team": "payments"}), True),  # a canary label
        ("team=payments", opened(labels={"team": "search"}), False),
        ("team!=payments", opened(), True),  # a missing label is ""
        ('team=""', opened(), True),
        ("region=us-east", opened(regions=["eu-west", "us-east"]), True),  # any region down
        ("region!=us-east", opened(regions=["eu-west", "us-east"]), False),
        ('region=~"eu-.*"', opened(regions=["us-east"]), False),
        ('region!~"eu-.*"', opened(regions=["us-east"]), True),
        ("severity=warning", opened(labels={"severity": "warning"}), True),  # label sets it
        ("severity=info", opened(severity="info", labels={"severity": "warning"}), True),
        ("region=eu-1", {"type": "agent_silent", "agent": "a1", "region": "eu-1"}, True),
        ("severity=warning", {"type": "agent_silent", "agent": "a1"}, True),
        ("agent=a1", {"type": "agent_recovered", "agent": "a1"}, True),
        ('route="checkout"', {"type": "canary_step", "route": "checkout"}, True),
        ("severity=info", {"type": "canary_step", "route": "checkout"}, True),
    ],
)
def test_matcher_decides_on_the_event_labels(matcher: str, event: dict[str, Any], expected: bool):
    assert matches(parse_matcher(matcher), event_labels(event)) is expected


@pytest.mark.parametrize(
    "text", ["severity", "=critical", "severity==critical", 'team=~"("', "1abc=x"]
)
def test_a_malformed_matcher_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="matcher|regex"):
        parse_matcher(text)


# -- first match, continue, default -----------------------------------------------------------


def test_first_matching_route_wins() -> None:
    routes = [
        {"receiver": "pager", "matchers": ['severity="critical"']},
        {"receiver": "chat", "matchers": ['namespace="shop"']},
    ]
    assert receivers_of(routes, opened()) == ["pager"]


def test_continue_goes_on_to_the_next_match() -> None:
    routes = [
        {"receiver": "chat", "matchers": ['namespace="shop"'], "continue": True},
        {"receiver": "mail", "matchers": ['event="agent_silent"']},
        {"receiver": "pager", "matchers": ['severity="critical"']},
        {"receiver": "mail", "matchers": ["namespace=shop"]},  # after a stop: not reached
    ]
    assert receivers_of(routes, opened()) == ["chat", "pager"]


def test_the_default_route_takes_what_no_route_matched() -> None:
    routes = [{"receiver": "pager", "matchers": ['namespace="payments"']}]
    assert receivers_of(routes, opened()) == ["default"]
    # A match with continue and nothing after it: the default route is not added.
    routes = [{"receiver": "chat", "matchers": ['namespace="shop"'], "continue": True}]
    assert receivers_of(routes, opened()) == ["chat"]


def test_all_matchers_of_a_route_must_match() -> None:
    routes = [{"receiver": "pager", "matchers": ["namespace=shop", "team=payments"]}]
    assert receivers_of(routes, opened()) == ["default"]
    assert receivers_of(routes, opened(labels={"team": "payments"})) == ["pager"]


# -- grouping and timing ----------------------------------------------------------------------


def flush(dispatcher: Dispatcher, at: datetime) -> list[Notification]:
    return dispatcher.due(at)


def test_group_wait_holds_the_first_notification_and_gathers_the_group() -> None:
    dispatcher = Dispatcher(table([], group_by=["namespace"], group_wait="30s"))
    dispatcher.add(opened("shop/checkout", 1), T0)
    dispatcher.add(opened("shop/cart", 2), T0 + timedelta(seconds=10))
    dispatcher.add(opened("search/api", 3), T0 + timedelta(seconds=10))
    assert flush(dispatcher, T0 + timedelta(seconds=29)) == []
    assert dispatcher.next_due() == T0 + timedelta(seconds=30)
    sent = flush(dispatcher, T0 + timedelta(seconds=30))
    assert [sorted(e["canary"] for e in n.firing) for n in sent] == [["shop/cart", "shop/checkout"]]
    sent = flush(dispatcher, T0 + timedelta(seconds=40))
    assert [[e["canary"] for e in n.firing] for n in sent] == [["search/api"]]


def test_group_by_all_labels_notifies_each_alert_apart() -> None:
    dispatcher = Dispatcher(table([]))
    dispatcher.add(opened("shop/checkout", 1), T0)
    dispatcher.add(opened("shop/cart", 2), T0)
    sent = flush(dispatcher, T0)
    assert sorted(len(n.firing) for n in sent) == [1, 1]


def test_an_empty_group_by_puts_everything_in_one_group() -> None:
    dispatcher = Dispatcher(table([{"receiver": "mail", "group_by": []}], group_by=["canary"]))
    dispatcher.add(opened("shop/checkout", 1), T0)
    dispatcher.add({"type": "agent_silent", "agent": "eu-1", "region": "eu"}, T0)
    [sent] = flush(dispatcher, T0)
    assert sorted(e["type"] for e in sent.firing) == ["agent_silent", "incident_opened"]


def test_group_interval_spaces_out_changes_to_a_notified_group() -> None:
    dispatcher = Dispatcher(table([], group_by=["namespace"], group_interval="5m"))
    dispatcher.add(opened("shop/checkout", 1), T0)
    assert len(flush(dispatcher, T0)) == 1
    dispatcher.add(opened("shop/cart", 2), T0 + timedelta(minutes=1))
    assert flush(dispatcher, T0 + timedelta(minutes=4)) == []
    [sent] = flush(dispatcher, T0 + timedelta(minutes=5))
    # The whole group is shown: the new alert and the one still firing.
    assert sorted(e["canary"] for e in sent.firing) == ["shop/cart", "shop/checkout"]
    assert not sent.reminder


def test_repeat_interval_reminds_while_the_incident_stays_open() -> None:
    dispatcher = Dispatcher(table([], repeat_interval="1h"))
    dispatcher.add(opened(), T0)
    assert len(flush(dispatcher, T0)) == 1
    assert flush(dispatcher, T0 + timedelta(minutes=59)) == []
    assert dispatcher.next_due() == T0 + timedelta(hours=1)
    [reminder] = flush(dispatcher, T0 + timedelta(hours=1))
    assert reminder.reminder and reminder.status == "firing"
    assert [e["incident"] for e in reminder.firing] == [1]
    [again] = flush(dispatcher, T0 + timedelta(hours=2))
    assert again.reminder
    # Resolved: the group says so once, then nothing more is due.
    dispatcher.add(resolved(), T0 + timedelta(hours=2, minutes=1))
    [done] = flush(dispatcher, T0 + timedelta(hours=2, minutes=6))
    assert done.status == "resolved" and [e["type"] for e in done.resolved] == ["incident_resolved"]
    assert dispatcher.next_due() is None
    assert flush(dispatcher, T0 + timedelta(hours=9)) == []


def test_send_resolved_false_says_nothing_when_an_incident_ends() -> None:
    dispatcher = Dispatcher(table([{"receiver": "chat"}], repeat_interval="1h"))
    dispatcher.add(opened(), T0)
    [first] = flush(dispatcher, T0)
    assert first.receiver == "chat"
    dispatcher.add(resolved(), T0 + timedelta(minutes=10))
    assert flush(dispatcher, T0 + timedelta(minutes=15)) == []
    assert dispatcher.next_due() is None  # no reminder for an ended incident either
    assert flush(dispatcher, T0 + timedelta(hours=3)) == []


def test_a_resolve_without_a_known_firing_alert_is_still_sent() -> None:
    # After a restart the group is gone, yet PagerDuty's incident must still be resolved.
    dispatcher = Dispatcher(table([], group_wait="30s"))
    dispatcher.add(resolved(incident=7), T0)
    [sent] = flush(dispatcher, T0)
    assert sent.status == "resolved" and sent.resolved[0]["incident"] == 7


def test_notices_are_sent_once_and_never_reminded() -> None:
    dispatcher = Dispatcher(table([], repeat_interval="1m"))
    dispatcher.add({"type": "canary_started", "route": "checkout"}, T0)
    [sent] = flush(dispatcher, T0)
    assert [e["type"] for e in sent.firing] == ["canary_started"]
    assert dispatcher.next_due() is None
    assert flush(dispatcher, T0 + timedelta(hours=1)) == []


# -- a resolve goes where its alert fired ------------------------------------------------------

# A pager for anything down in eu (and on), the payments team grouped by region.
EU_AND_PAYMENTS = [
    {"receiver": "pager", "matchers": ['region="eu"'], "continue": True},
    {"receiver": "mail", "matchers": ['team="payments"'], "group_by": ["region"]},
]


def test_a_resolve_goes_to_every_group_its_alert_fired_in_whatever_its_labels() -> None:
    dispatcher = Dispatcher(table(EU_AND_PAYMENTS, repeat_interval="1h", group_interval="0s"))
    dispatcher.add(opened("default/web", 1, regions=["eu"], labels={"team": "payments"}), T0)
    assert sorted(n.receiver for n in flush(dispatcher, T0)) == ["mail", "pager"]
    # eu is back: the resolve names no region down, so its own labels match only `mail`,
    # and `mail`'s group_by [region] would put it in another group.
    dispatcher.add(
        {**resolved("default/web", 1), "regions_down": [], "labels": {"team": "payments"}},
        T0 + timedelta(minutes=1),
    )
    sent = flush(dispatcher, T0 + timedelta(minutes=1))
    assert sorted((n.receiver, n.group_key, n.status) for n in sent) == [
        ("mail", "1:mail:{region=eu}", "resolved"),
        ("pager", "0:pager:incident-1", "resolved"),
    ]
    assert all([e["type"] for e in n.resolved] == ["incident_resolved"] for n in sent)
    # Ended: never reminded of, and no group is left behind.
    assert dispatcher.next_due() is None
    assert flush(dispatcher, T0 + timedelta(hours=5)) == []
    assert dispatcher.groups == {}


@pytest.mark.parametrize(
    "resolve",
    [
        # The team moved while the incident was open.
        {"labels": {"team": "checkout"}},
        # The canary was removed (or renamed): the resolve carries no labels at all.
        {"labels": {}, "policy": None, "reason": "the canary no longer runs in any region"},
    ],
    ids=["labels-edited", "canary-removed"],
)
def test_a_resolve_follows_its_alert_after_the_canary_changed(resolve: dict[str, Any]) -> None:
    routes = [{"receiver": "pager", "matchers": ['team="payments"']}]
    dispatcher = Dispatcher(table(routes, repeat_interval="1h", group_interval="0s"))
    dispatcher.add(opened(labels={"team": "payments"}), T0)
    [first] = flush(dispatcher, T0)
    dispatcher.add({**resolved(), **resolve}, T0 + timedelta(minutes=1))
    [done] = flush(dispatcher, T0 + timedelta(minutes=1))
    assert (done.receiver, done.group_key, done.status) == (
        first.receiver,
        first.group_key,
        "resolved",
    )
    assert dispatcher.next_due() is None, "nothing left to remind of"


def test_a_resolve_after_a_restart_goes_to_the_stored_groups() -> None:
    dispatcher = Dispatcher(table(EU_AND_PAYMENTS, repeat_interval="1h", group_interval="0s"))
    dispatcher.add(opened("default/web", 1, regions=["eu"], labels={"team": "payments"}), T0)
    flush(dispatcher, T0)
    restarted = Dispatcher(table(EU_AND_PAYMENTS, repeat_interval="1h", group_interval="0s"))
    assert restarted.restore(dispatcher.snapshot()) == 2
    restarted.add({**resolved("default/web", 1), "regions_down": []}, T0 + timedelta(minutes=1))
    sent = flush(restarted, T0 + timedelta(minutes=1))
    assert sorted((n.receiver, n.status) for n in sent) == [
        ("mail", "resolved"),
        ("pager", "resolved"),
    ]
    assert restarted.next_due() is None


def test_a_new_revision_keeps_the_groups_of_routes_that_stay() -> None:
    routes = [{"receiver": "pager", "matchers": ["namespace=shop"]}]
    dispatcher = Dispatcher(table(routes, repeat_interval="1h"))
    dispatcher.add(opened(), T0)
    assert len(flush(dispatcher, T0)) == 1
    dispatcher.replace_table(table(routes, repeat_interval="2h"))
    assert flush(dispatcher, T0 + timedelta(hours=1)) == []
    assert len(flush(dispatcher, T0 + timedelta(hours=2))) == 1
    dispatcher.replace_table(table([{"receiver": "mail"}]))  # the route is gone: so is its group
    assert dispatcher.groups == {}


# -- the loader ------------------------------------------------------------------------------


def _load(text: str) -> list[str]:
    content = text.encode()
    files = [SourceFile("alerting.yaml", git_blob_sha(content), lambda: content)]
    return [d.format() for d in load_config(files).diagnostics]


RECEIVER = """
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {name: pager}
spec:
  pagerduty: {routing_key_from: {env: PD_KEY}}
"""


def test_routing_naming_an_unknown_receiver_is_an_error_at_its_line() -> None:
    found = _load(
        RECEIVER
        + """---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {name: default}
spec:
  receiver: pager
  routes:
    - receiver: pagr
      matchers: ['severity="critical"']
"""
    )
    assert len(found) == 1
    assert "alerting.yaml:14" in found[0] and "spec.routes[0].receiver" in found[0]
    assert "'pagr' is not a declared Receiver (receivers: pager)" in found[0]


def test_bad_matchers_and_inline_secret_shapes_are_errors() -> None:
    found = "\n".join(
        _load(
            """
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {name: pager}
spec:
  pagerduty: {routing_key_from: {env: PD_KEY}, routing_key: abc}
---
apiVersion: canary-reconciler/v1
kind: Receiver
metadata: {name: mail}
spec:
  email: {to: [a@b.c], from: r@b.c, smarthost: "mx:25", auth_password_from: {env: P, file: /x}}
---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {name: default}
spec:
  receiver: pager
  routes:
    - receiver: pager
      matchers: ['severity=="critical"']
"""
        )
    )
    assert "spec.pagerduty.routing_key: unknown field 'routing_key'" in found
    assert "spec.email.auth_password_from: give exactly one of env or file" in found
    assert "spec.email: auth_username and auth_password_from go together" in found
    assert "is not a matcher" in found


def test_a_second_routing_is_an_error_and_unrouted_receivers_a_warning() -> None:
    routing = """---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {{name: {name}}}
spec: {{receiver: pager}}
"""
    found = _load(RECEIVER + routing.format(name="first") + routing.format(name="second"))
    assert len(found) == 1
    assert "AlertRouting/second" in found[0]
    assert (
        "only one AlertRouting is allowed; AlertRouting/first is declared at alerting.yaml:8"
        in (found[0])
    )
    content = RECEIVER.encode()
    files = [SourceFile("alerting.yaml", git_blob_sha(content), lambda: content)]
    [warning] = load_config(files).diagnostics
    assert warning.severity == "warning"
    assert "no AlertRouting sends events to this receiver" in warning.format()


def test_a_document_that_failed_to_load_brings_no_second_error_or_false_warning() -> None:
    """A Receiver with a field error is still declared: a route naming it is not told it
    does not exist. An AlertRouting with an error is still there: its Receivers are not
    told that nothing routes to them (the warning waits for a revision without errors)."""
    broken_receiver = RECEIVER.replace("{routing_key_from: {env: PD_KEY}}", "{routing_key: abc}")
    routing = """---
apiVersion: canary-reconciler/v1
kind: AlertRouting
metadata: {name: default}
spec:
  receiver: pager
  routes:
    - receiver: pager
      matchers: [MATCHER]
"""
    found = _load(broken_receiver + routing.replace("MATCHER", "'severity=\"critical\"'"))
    assert found and all("spec.pagerduty" in message for message in found), found

    found = _load(RECEIVER + routing.replace("MATCHER", "'a=~('"))
    assert found and all("spec.routes[0].matchers" in message for message in found), found


def test_groups_stored_by_an_older_version_stop_reminding_of_ended_incidents() -> None:
    """An older version routed resolves by their own labels, so stored groups can hold the
    firing alert of an incident that has ended: taken back at start, it would remind for
    ever. Only the alerts of incidents still open are taken back."""
    dispatcher = Dispatcher(table([], repeat_interval="1h", group_interval="0s"))
    dispatcher.add(opened("shop/checkout", 1), T0)
    dispatcher.add(opened("shop/cart", 2), T0)
    flush(dispatcher, T0)
    stored = dispatcher.snapshot()

    restarted = Dispatcher(table([], repeat_interval="1h", group_interval="0s"))
    restarted.restore(without_ended(stored, open_incidents={2}))
    reminders = flush(restarted, T0 + timedelta(hours=1))
    firing = [(n.reminder, [event["incident"] for event in n.firing]) for n in reminders]
    assert firing == [(True, [2])]
    assert without_ended(stored, open_incidents=set()) == []
