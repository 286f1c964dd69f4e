"""The Receiver and AlertRouting kinds: where events are delivered, and which events go where.

Alertmanager's model and field names (`matchers`, `continue`, `group_by`, `group_wait`,
`group_interval`, `repeat_interval`, `send_resolved`), so a route can be pasted from there.
Secrets are never written inline: a `*_from` field names an environment variable or a file
that the server reads when it loads the routing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from schemas.base import API_VERSION, Duration, Metadata, Problem, Slug, StrictModel

MatchOp = Literal["=", "!=", "=~", "!~"]

# `name op value`, the value optionally double-quoted, as Alertmanager writes matchers.
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-/]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
MATCHER_PATTERN = r"^\s*[A-Za-z_][A-Za-z0-9_.\-/]*\s*(=~|!~|!=|=)"

# The labels every event carries besides its canary's own labels (docs/notifications.md).
EVENT_LABELS = ("event", "canary", "namespace", "severity", "region", "agent", "route")
# `group_by: ['...']`: group by every label, i.e. one group per alert.
GROUP_BY_ALL = "..."


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher: a label, an operator, a value (a regex for `=~` and `!~`)."""

    name: str
    op: MatchOp
    value: str


def parse_matcher(text: str) -> Matcher:
    """Parse `name=value`, `name!=value`, `name=~regex` or `name!~regex`.

    Raises:
        ValueError: the text is not a matcher, or its regex does not compile.
    """
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not a matcher: expected label=value, label!=value, label=~regex "
            'or label!~regex, e.g. severity="critical"'
        )
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif value[:1] in ("=", "~"):
        raise ValueError(
            f"{text!r} is not a matcher: the operators are =, !=, =~ and !~ (quote a value "
            "that starts with = or ~)"
        )
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"{text!r}: the regex does not compile: {error}") from error
    return Matcher(name, op, value)  # type: ignore[arg-type]


def _check_matcher(value: str) -> str:
    parse_matcher(value)
    return value


MatcherText = Annotated[
    str,
    AfterValidator(_check_matcher),
    Field(json_schema_extra={"pattern": MATCHER_PATTERN}),
]


class SecretRef(StrictModel):
    """Where the server reads a secret: an environment variable or a file, never git."""

    env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable."
    )
    file: str | None = Field(
        default=None, min_length=1, description="Path of a file on the server (trimmed)."
    )

    def problems(self) -> Iterator[Problem]:
        if (self.env is None) == (self.file is None):
            yield ((), "give exactly one of env or file")


class WebhookReceiver(StrictModel):
    """A JSON POST signed with HMAC-SHA256 (`X-Canary-Reconciler-Signature-256`)."""

    url: str = Field(pattern=r"^https?://\S+$", description="Where events are posted.")
    secret_from: SecretRef | None = Field(
        default=None, description="The HMAC key; without it the body is not signed."
    )


class SlackReceiver(StrictModel):
    """A Slack (or compatible) incoming webhook: `{"text": ...}`."""

    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    url_from: SecretRef | None = Field(
        default=None, description="Slack webhook URLs hold a token: read it from the server."
    )

    def problems(self) -> Iterator[Problem]:
        if (self.url is None) == (self.url_from is None):
            yield ((), "give exactly one of url or url_from")


class PagerDutyReceiver(StrictModel):
    """PagerDuty Events API v2: trigger and resolve, one dedup_key per incident."""

    routing_key_from: SecretRef = Field(description="The integration's routing key.")
    url: str = Field(
        default="https://events.pagerduty.com",
        pattern=r"^https?://\S+$",
        description="Base URL; events go to <url>/v2/enqueue.",
    )
    severity: Literal["critical", "error", "warning", "info"] | None = Field(
        default=None, description="PagerDuty severity; default: the event's severity label."
    )
    source: str = Field(default="canary-reconciler", min_length=1, max_length=255)


class OpsgenieReceiver(StrictModel):
    """Opsgenie Alert API: create with an alias, close by alias; `GenieKey` auth."""

    api_key_from: SecretRef = Field(description="An API integration's key.")
    url: str = Field(
        default="https://api.opsgenie.com",
        pattern=r"^https?://\S+$",
        description="Base URL (https://api.eu.opsgenie.com for the EU instance).",
    )
    priority: Literal["P1", "P2", "P3", "P4", "P5"] | None = Field(
        default=None, description="Default: P1 for critical, P3 for warning, P5 otherwise."
    )
    tags: list[str] = Field(default_factory=list)


class EmailReceiver(StrictModel):
    """Mail over SMTP (stdlib smtplib), optionally upgraded with STARTTLS."""

    to: list[str] = Field(min_length=1, description="Recipients.")
    from_: str = Field(alias="from", min_length=3, description="The From address.")
    smarthost: str = Field(pattern=r"^\S+:[0-9]{1,5}$", description="host:port of the SMTP server.")
    starttls: bool = Field(default=False, description="Upgrade with STARTTLS (required then).")
    auth_username: str | None = None
    auth_password_from: SecretRef | None = None

    def problems(self) -> Iterator[Problem]:
        if (self.auth_username is None) != (self.auth_password_from is None):
            yield ((), "auth_username and auth_password_from go together")


class ReceiverSpec(StrictModel):
    """One or more integrations; an event routed here goes to each of them."""

    send_resolved: bool = Field(
        default=True, description="Also notify when an incident or silence ends."
    )
    webhook: WebhookReceiver | None = None
    slack: SlackReceiver | None = None
    pagerduty: PagerDutyReceiver | None = None
    opsgenie: OpsgenieReceiver | None = None
    email: EmailReceiver | None = None

    def problems(self) -> Iterator[Problem]:
        parts = (self.webhook, self.slack, self.pagerduty, self.opsgenie, self.email)
        if all(part is None for part in parts):
            yield ((), "declare at least one of webhook, slack, pagerduty, opsgenie, email")
        for name, part in zip(
            ("webhook", "slack", "pagerduty", "opsgenie", "email"), parts, strict=True
        ):
            if part is None:
                continue
            for path, message in part.problems():
                yield ((name, *path), message)
            for field_name in type(part).model_fields:
                value = getattr(part, field_name)
                if isinstance(value, SecretRef):
                    for path, message in value.problems():
                        yield ((name, field_name, *path), message)


class ReceiverDocument(StrictModel):
    """A `kind: Receiver` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Receiver"] = "Receiver"
    metadata: Metadata
    spec: ReceiverSpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)


class Timing(StrictModel):
    """Grouping and timing a route sets; a child route inherits what it leaves out."""

    group_by: list[str] | None = Field(
        default=None,
        description="Labels that split events into groups; ['...'] means every label.",
    )
    group_wait: Duration | None = Field(
        default=None, description="Wait before a new group's first notification."
    )
    group_interval: Duration | None = Field(
        default=None, description="Wait before notifying of changes to a notified group."
    )
    repeat_interval: Duration | None = Field(
        default=None, description="Remind of alerts still firing after this long."
    )


class AlertRoute(Timing):
    """A route: events its matchers all accept go to its receiver."""

    name: Slug | None = Field(
        default=None,
        description="Optional; when every route has one, the plan shows each route's changes "
        "field by field.",
    )
    receiver: str = Field(min_length=1, description="Name of a Receiver.")
    matchers: list[MatcherText] = Field(
        default_factory=list, description="All must match; none: every event matches."
    )
    continue_: bool = Field(
        default=False,
        alias="continue",
        description="After a match, keep looking at the routes that follow.",
    )


class AlertRoutingSpec(Timing):
    """The default route (receiver and timing) and the routes tried in order."""

    receiver: str = Field(min_length=1, description="Receiver of events no route matched.")
    routes: list[AlertRoute] = Field(default_factory=list)

    def problems(self) -> Iterator[Problem]:
        seen: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            if route.name is None:
                continue
            if route.name in seen:
                yield (
                    ("routes", index, "name"),
                    f"route name {route.name!r} is already used by routes[{seen[route.name]}]",
                )
            seen.setdefault(route.name, index)


class AlertRoutingDocument(StrictModel):
    """A `kind: AlertRouting` document (at most one per repository)."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["AlertRouting"] = "AlertRouting"
    metadata: Metadata
    spec: AlertRoutingSpec

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.problems():
            yield (("spec", *path), message)
