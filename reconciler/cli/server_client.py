"""Asking the running `reconcile serve`: finding it through its server file, and its APIs.

While the server holds the state file, commands that need the file (`agents token`,
`site build`, `canary` actions) go through it instead; this module is the one way they do.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reconciler.cli.console import Console
from reconciler.server.address_file import read_server_file, server_file, why_stale

ADMIN_TOKEN_ENV = "RECONCILER_ADMIN_TOKEN"
READ_TOKEN_ENV = "RECONCILER_READ_TOKEN"


class ServerError(Exception):
    """Asking the server failed; the message says how, for an `Error:` line."""


class ServerUnreachable(ServerError):
    """The server did not answer."""


class ServerRefused(ServerError):
    """The server answered with another status than the one expected.

    Attributes:
        status: the HTTP status.
        text: the response body as text.
        detail: the body's `error` field when it is a JSON error, else the text.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.status, self.text = response.status_code, response.text
        self.detail = self.text
        try:
            document = response.json()
        except ValueError:
            document = None
        if isinstance(document, dict) and "error" in document:
            self.detail = str(document["error"])
            shown = self.detail
        else:
            # Not our server's answer (a proxy's page, another service): its text, on one line.
            words = " ".join(re.sub(r"<[^>]*>", " ", self.text).split())
            shown = (words[:200] or "an empty answer") + (
                f" (is {response.url.join('/')} the reconcile server?)"
            )
        super().__init__(f"the server refused ({self.status}): {shown}")


def server_url(state: Path, explicit: str | None = None) -> str | None:
    """`--server` when given, else the URL a running server wrote next to the state file.

    A server file left behind by a server that died without cleaning up (`kill -9`, a
    crash) names a process that is gone or an address nobody listens at: that server is
    not running, so None, with a note on stderr saying the file is stale.
    """
    if explicit:
        return explicit.rstrip("/")
    info = server_file(state)
    address = read_server_file(info)
    if address is None:
        return None
    reason = why_stale(address)
    if reason is not None:
        print(
            f"note: ignoring {info}: the server it names is not running ({reason}); "
            "it is left over from a server that stopped without removing it",
            file=sys.stderr,
        )
        return None
    return address.url


def admin_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The server's admin token, which the operator and admin APIs need; None when unset."""
    return environ.get(ADMIN_TOKEN_ENV) or None


def read_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The token of the read API, when the server protects it."""
    return environ.get(READ_TOKEN_ENV) or None


@dataclass(frozen=True)
class ServerClient:
    """One running server, at `url`, asked with a bearer `token` (or none)."""

    url: str
    token: str | None = field(default=None, repr=False)

    def get(self, path: str, *, timeout: float, expect: int = 200) -> Any:
        """GET `path` and return its JSON body.

        Raises:
            ServerUnreachable: the request failed before the server answered.
            ServerRefused: the status was not `expect`.
            ServerError: the answer was not JSON.
        """
        return self._ask("GET", path, timeout, expect, None)

    def post(self, path: str, *, timeout: float, expect: int = 200, body: Any = None) -> Any:
        """POST `body` as JSON to `path` and return the JSON answer.

        Raises:
            ServerUnreachable: the request failed before the server answered.
            ServerRefused: the status was not `expect`.
            ServerError: the answer was not JSON.
        """
        return self._ask("POST", path, timeout, expect, body)

    def _ask(self, method: str, path: str, timeout: float, expect: int, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, f"{self.url}{path}", json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as error:
            raise ServerUnreachable(f"cannot reach the server at {self.url}: {error}") from error
        if response.status_code != expect:
            raise ServerRefused(response)
        try:
            return response.json()
        except ValueError as error:
            raise ServerError(
                f"the server at {self.url} answered {method} {path} with something other "
                f"than JSON: {response.text[:200]!r}"
            ) from error


def post_as_admin(
    url: str, path: str, body: Any, *, timeout: float, console: Console, state: Path, to: str
) -> Any | None:
    """POST `body` to `path` of the server at `url`, which holds `state`, with the admin
    token; its JSON answer, or None once the console said why not (`to`: what the token is
    for, as in "set RECONCILER_ADMIN_TOKEN (its admin token) to build the site through it")."""
    admin = admin_token()
    if admin is None:
        console.error(
            f"{state} is held by the server at {url}; set {ADMIN_TOKEN_ENV} (its admin token) "
            f"to {to}"
        )
        return None
    try:
        return ServerClient(url, admin).post(path, timeout=timeout, body=body)
    except ServerError as error:
        console.error(str(error))
        return None
