"""Finding the `reconcile serve` that holds a state file, for CLI commands that must go
through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from reconciler.server.address_file import server_file


def server_url(state: Path, explicit: str | None = None) -> str | None:
    """`--server` when given, else the URL the server wrote next to the state file, else None."""
    if explicit:
        return explicit.rstrip("/")
    info = server_file(state)
    if not info.exists():
        return None
    return str(orjson.loads(info.read_bytes())["url"])


class ServerUnreachable(Exception):
    """The server did not answer; the message says which one and why."""


def admin_post(
    url: str, path: str, token: str, *, timeout: float, body: Any = None
) -> httpx.Response:
    """POST to a running server with its admin token.

    Raises:
        ServerUnreachable: the request failed before the server answered.
    """
    try:
        return httpx.post(
            f"{url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as error:
        raise ServerUnreachable(f"cannot reach the server at {url}: {error}") from error
