"""Receiver integrations: how one notification goes out to a webhook, Slack, PagerDuty
(Events API v2), Opsgenie (Alert API) or an SMTP server. Each `send` is one attempt; the
caller retries with backoff."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from reconciler.core.notifications import (
    email_body,
    email_subject,
    grouped_document,
    opsgenie_alert,
    pagerduty_event,
    slack_text,
)
from reconciler.core.routing import Notification, alert_key
from reconciler.server.notify.hooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    redact,
    sign,
    url_secrets,
)

SMTP_TIMEOUT = 10.0


class DeliveryError(Exception):
    """One attempt failed; `retry` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class SecretMissing(Exception):
    """A receiver's secret is not in the server's environment or its file cannot be read."""


def read_secret(ref: Mapping[str, Any], environ: Mapping[str, str], where: str) -> str:
    """The value of a `{env: NAME}` or `{file: PATH}` reference.

    Raises:
        SecretMissing: the variable is unset or empty, or the file is unreadable or empty;
            the message names the receiver field and the variable or file, never a value.
    """
    if ref.get("env"):
        name = str(ref["env"])
        value = environ.get(name, "").strip()
        if not value:
            raise SecretMissing(f"{where}: environment variable {name} is not set on the server")
        return value
    path = str(ref.get("file", ""))
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SecretMissing(f"{where}: cannot read {path}: {error.strerror}") from error
    if not value:
        raise SecretMissing(f"{where}: {path} is empty")
    return value


def _check(response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    retry = response.status_code >= 500 or response.status_code == 429
    detail = response.text[:200].strip()
    raise DeliveryError(
        f"HTTP {response.status_code}" + (f": {detail}" if detail else ""), retry=retry
    )


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise DeliveryError(str(error) or type(error).__name__) from error
    _check(response)


@dataclass(frozen=True)
class Integration:
    """One way a receiver is reached. Subclasses implement `send` (one attempt)."""

    receiver: str
    kind: str

    def takes(self, notification: Notification) -> bool:
        """Whether this integration has anything to send for the notification."""
        return bool(notification.firing or notification.resolved)

    async def send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        """Deliver once.

        Raises:
            DeliveryError: the attempt failed; its message (logged, listed and stored) has
                every secret of the integration redacted, as a receiver's answer may echo
                its key or its URL.
        """
        try:
            await self._send(notification, client)
        except DeliveryError as error:
            # `from None`: the original error's text would carry the secret on in a traceback.
            raise DeliveryError(redact(str(error), self.secrets()), error.retry) from None

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """The configured values no message may show."""
        return ()


@dataclass(frozen=True)
class Webhook(Integration):
    """JSON of the whole group, HMAC-signed when a secret is configured."""

    url: str
    secret: str | None

    def secrets(self) -> tuple[str, ...]:
        return (self.secret,) if self.secret else ()

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        body = orjson.dumps(grouped_document(notification))
        headers = {"Content-Type": "application/json", EVENT_HEADER: notification.status}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        await _post(client, self.url, body, headers)


@dataclass(frozen=True)
class Slack(Integration):
    """A Slack incoming webhook: one message listing the group."""

    url: str

    def secrets(self) -> tuple[str, ...]:
        return url_secrets(self.url)  # the token is in the path

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        body = orjson.dumps({"text": slack_text(notification)})
        await _post(client, self.url, body, {"Content-Type": "application/json"})


def _alerts_only(notification: Notification) -> bool:
    return any(alert_key(e) for e in (*notification.firing, *notification.resolved))


@dataclass(frozen=True)
class PagerDuty(Integration):
    """Events API v2: `trigger` per firing alert, `resolve` per ended one, same dedup_key."""

    url: str
    routing_key: str
    severity: str | None
    source: str

    def secrets(self) -> tuple[str, ...]:
        return (self.routing_key,)

    def takes(self, notification: Notification) -> bool:
        return _alerts_only(notification)  # a notice would open an incident nothing resolves

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        target = self.url.rstrip("/") + "/v2/enqueue"
        headers = {"Content-Type": "application/json"}
        for event, action in (
            *((e, "trigger") for e in notification.firing),
            *((e, "resolve") for e in notification.resolved),
        ):
            document = pagerduty_event(event, action, self.routing_key, self.severity, self.source)
            if document is not None:
                await _post(client, target, orjson.dumps(document), headers)


@dataclass(frozen=True)
class Opsgenie(Integration):
    """Alert API: create with an alias per alert, close by that alias; `GenieKey` auth."""

    url: str
    api_key: str
    priority: str | None
    tags: tuple[str, ...]

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,)

    def takes(self, notification: Notification) -> bool:
        return _alerts_only(notification)

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        base = self.url.rstrip("/") + "/v2/alerts"
        headers = {"Content-Type": "application/json", "Authorization": f"GenieKey {self.api_key}"}
        for event in notification.firing:
            document = opsgenie_alert(event, self.priority, self.tags)
            if document is not None:
                await _post(client, base, orjson.dumps(document), headers)
        for event in notification.resolved:
            alias = alert_key(event)
            if alias is None:
                continue
            body = orjson.dumps({"source": "canary-reconciler", "note": "resolved"})
            url = f"{base}/{quote(alias, safe='')}/close?identifierType=alias"
            await _post(client, url, body, headers)


@dataclass(frozen=True)
class Email(Integration):
    """One mail per notification over SMTP, on a worker thread (smtplib blocks)."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool
    username: str | None
    password: str | None

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        message = EmailMessage()
        message["Subject"] = email_subject(notification)
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message.set_content(email_body(notification))
        try:
            await asyncio.to_thread(self._deliver, message)
        except smtplib.SMTPResponseException as error:
            raise DeliveryError(
                f"SMTP {error.smtp_code}: {error.smtp_error!r}", retry=error.smtp_code < 500
            ) from error
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"SMTP: {error}") from error

    def _deliver(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username is not None and self.password is not None:
                smtp.login(self.username, self.password)
            smtp.send_message(message)


@dataclass(frozen=True)
class Broken(Integration):
    """A receiver that cannot be reached as configured (a missing secret): every delivery
    fails with the reason, counted and listed, until a revision or the environment fixes it."""

    problem: str

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> None:
        raise DeliveryError(self.problem, retry=False)


def integrations(
    name: str, spec: Mapping[str, Any], environ: Mapping[str, str]
) -> list[Integration]:
    """The integrations of one Receiver resource's spec, secrets read from the server.

    An integration whose secret is missing becomes `Broken`, so the others still work.
    """
    found: list[Integration] = []
    where = f"Receiver {name}"
    builders = {
        "webhook": _webhook,
        "slack": _slack,
        "pagerduty": _pagerduty,
        "opsgenie": _opsgenie,
        "email": _email,
    }
    for kind, build in builders.items():
        part = spec.get(kind)
        if part is None:
            continue
        try:
            found.append(build(name, part, environ, f"{where}: spec.{kind}"))
        except SecretMissing as error:
            found.append(Broken(name, kind, str(error)))
    return found


def _secret(part: Mapping[str, Any], field: str, environ: Mapping[str, str], where: str) -> str:
    return read_secret(part[field], environ, f"{where}.{field}")


def _webhook(name: str, part: Any, environ: Mapping[str, str], where: str) -> Integration:
    secret = _secret(part, "secret_from", environ, where) if part.get("secret_from") else None
    return Webhook(name, "webhook", str(part["url"]), secret)


def _slack(name: str, part: Any, environ: Mapping[str, str], where: str) -> Integration:
    url = part.get("url") or _secret(part, "url_from", environ, where)
    return Slack(name, "slack", str(url))


def _pagerduty(name: str, part: Any, environ: Mapping[str, str], where: str) -> Integration:
    key = _secret(part, "routing_key_from", environ, where)
    return PagerDuty(
        name,
        "pagerduty",
        str(part.get("url", "https://events.pagerduty.com")),
        key,
        part.get("severity"),
        str(part.get("source", "canary-reconciler")),
    )


def _opsgenie(name: str, part: Any, environ: Mapping[str, str], where: str) -> Integration:
    key = _secret(part, "api_key_from", environ, where)
    return Opsgenie(
        name,
        "opsgenie",
        str(part.get("url", "https://api.opsgenie.com")),
        key,
        part.get("priority"),
        tuple(part.get("tags") or ()),
    )


def _email(name: str, part: Any, environ: Mapping[str, str], where: str) -> Integration:
    password = (
        _secret(part, "auth_password_from", environ, where)
        if part.get("auth_password_from")
        else None
    )
    host, _, port = str(part["smarthost"]).rpartition(":")
    return Email(
        name,
        "email",
        host.strip("[]"),
        int(port),
        str(part["from"]),
        tuple(part["to"]),
        bool(part.get("starttls", False)),
        part.get("auth_username"),
        password,
    )
