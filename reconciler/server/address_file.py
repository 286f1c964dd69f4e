"""Where a running server says its URL, for CLI commands that need its state file."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

# How long a CLI command waits to learn whether the address still accepts connections.
PROBE_SECONDS = 1.0


def server_file(state: Path) -> Path:
    """The file next to the state file in which `reconcile serve` writes its URL and pid."""
    return state.with_name(state.name + ".serve.json")


@dataclass(frozen=True)
class ServerAddress:
    """What a server file says: the server's URL and process id (None in an old file)."""

    url: str
    pid: int | None


def read_server_file(info: Path) -> ServerAddress | None:
    """The address in `info`; None when there is no file or it cannot be read as one."""
    try:
        document = orjson.loads(info.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("url"), str):
        return None
    pid = document.get("pid")
    return ServerAddress(document["url"], pid if isinstance(pid, int) else None)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def _accepts_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        with socket.create_connection(address, timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def why_stale(address: ServerAddress) -> str | None:
    """Why the server a file names is not running (its process is gone, or nothing listens
    at its address: a `kill -9` leaves the file behind); None when it looks alive."""
    if address.pid is not None and not _process_alive(address.pid):
        return f"its process {address.pid} is not running"
    if not _accepts_connections(address.url):
        return f"nothing accepts connections at {address.url}"
    return None
