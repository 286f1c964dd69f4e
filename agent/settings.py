"""Settings of `agent run`: flags over environment over defaults. The token never in a file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.checks.browser_check import (
    BROWSER_PRIORITIES,
    DEFAULT_BROWSER_PRIORITY,
    BrowserPriority,
    default_browser_path,
)
from agent.checks.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADER_LINE,
    DEFAULT_MAX_HEADERS,
    ResponseLimits,
)
from agent.spool import foreign_file
from schemas.wire import MAX_PULL_WAIT


class SettingsError(ValueError):
    """A setting is missing or has a value that cannot be used."""


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent is configured with."""

    url: str
    token: str = field(repr=False)
    pull_interval: float = 30.0
    # Seconds a pull may be held by the server until the config changes (a long poll; 0: plain
    # polling every `pull_interval`). Servers that do not hold pulls are polled as before.
    pull_wait: float = 30.0
    flush_interval: float = 5.0
    buffer_capacity: int = 10_000
    batch_size: int = 500
    spool: Path = Path("agent-spool.sqlite")
    listen: tuple[str, int] | None = ("127.0.0.1", 9470)
    reconnect_after: float = 60.0
    shutdown_timeout: float = 10.0
    http_clients: int = 16
    max_response_headers: int = DEFAULT_MAX_HEADERS
    max_response_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_response_header_line: int = DEFAULT_MAX_HEADER_LINE
    max_response_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Browser checks run a script from the config repository on this machine: only when the
    # operator starting the agent says so, with the flag (never from the environment).
    allow_browser_checks: bool = False
    browser_path: Path = field(default_factory=default_browser_path)
    # How Chromium and the Playwright driver are scheduled beside the agent's other checks.
    browser_priority: BrowserPriority = DEFAULT_BROWSER_PRIORITY
    # The CPUs Chromium and the driver may run on (None: any), e.g. all but the first.
    browser_cpus: frozenset[int] | None = None

    @property
    def response_limits(self) -> ResponseLimits:
        """How much of a target's response a check reads."""
        return ResponseLimits(
            max_headers=self.max_response_headers,
            max_header_bytes=self.max_response_header_bytes,
            max_header_line=self.max_response_header_line,
            max_body_bytes=self.max_response_body_bytes,
        )


def parse_listen(text: str) -> tuple[str, int] | None:
    """`HOST:PORT` (`[::1]:PORT` for IPv6), or `off`."""
    if text == "off":
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65_535:
        raise SettingsError(
            f"--listen {text!r}: expected HOST:PORT with a TCP port (0-65535), "
            "e.g. 127.0.0.1:9470, or off"
        )
    return host.strip("[]"), int(port)


def load_settings(
    flags: Mapping[str, object], environ: Mapping[str, str] = os.environ
) -> AgentSettings:
    """Merge flags and environment (`RECONCILER_URL`, `AGENT_TOKEN`, `AGENT_*`).

    Raises:
        SettingsError: the control plane URL or the token is missing, or a value is invalid.
    """
    url = flags.get("url") or environ.get("RECONCILER_URL")
    token = environ.get("AGENT_TOKEN")
    if not url:
        raise SettingsError("no control plane URL: pass --url or set RECONCILER_URL")
    if not str(url).lower().startswith(("http://", "https://")):
        raise SettingsError(
            f"control plane URL {url!r}: expected http:// or https://, "
            "e.g. https://reconciler.example.com"
        )
    if not token:
        raise SettingsError(
            "no agent token: set AGENT_TOKEN (mint one with `reconcile agents token NAME`)"
        )
    values: dict[str, Any] = {}
    numeric = {
        "pull_interval": ("AGENT_PULL_INTERVAL", float),
        "flush_interval": ("AGENT_FLUSH_INTERVAL", float),
        "buffer_capacity": ("AGENT_BUFFER_CAPACITY", int),
        "batch_size": ("AGENT_BATCH_SIZE", int),
        "reconnect_after": ("AGENT_RECONNECT_AFTER", float),
        "shutdown_timeout": ("AGENT_SHUTDOWN_TIMEOUT", float),
        "http_clients": ("AGENT_HTTP_CLIENTS", int),
        "max_response_headers": ("AGENT_MAX_RESPONSE_HEADERS", int),
        "max_response_header_bytes": ("AGENT_MAX_RESPONSE_HEADER_BYTES", int),
        "max_response_header_line": ("AGENT_MAX_RESPONSE_HEADER_LINE", int),
        "max_response_body_bytes": ("AGENT_MAX_RESPONSE_BODY_BYTES", int),
    }
    for name, (variable, kind) in numeric.items():
        raw, origin = _read(flags, environ, name, variable)
        if raw is None:
            continue
        try:
            value = kind(raw)
        except (TypeError, ValueError) as error:
            expected = "a number" if kind is float else "a whole number"
            raise SettingsError(f"{origin}: {raw!r} is not {expected}") from error
        if value <= 0:
            raise SettingsError(f"{origin}: must be greater than 0, got {raw!r}")
        values[name] = value
    wait, origin = _read(flags, environ, "pull_wait", "AGENT_PULL_WAIT")
    if wait is not None:
        try:
            values["pull_wait"] = float(str(wait))
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{origin}: {wait!r} is not a number") from error
        if not 0 <= values["pull_wait"] <= MAX_PULL_WAIT:
            raise SettingsError(
                f"{origin}: expected seconds from 0 (no long poll) to {MAX_PULL_WAIT:g}, "
                f"got {wait!r}"
            )
    spool = flags.get("spool") or environ.get("AGENT_SPOOL")
    if spool:
        values["spool"] = Path(str(spool))
    path = values.get("spool", AgentSettings.spool)
    refused = foreign_file(path)
    if refused is not None:
        raise SettingsError(
            f"--spool {path}: the file {refused}; the agent moves a damaged spool aside and "
            "starts a new one, so it takes only a file of its own: pass another path"
        )
    listen = flags.get("listen") or environ.get("AGENT_LISTEN")
    if listen:
        values["listen"] = parse_listen(str(listen))
    if flags.get("allow_browser_checks"):
        values["allow_browser_checks"] = True
    priority = flags.get("browser_priority") or environ.get("AGENT_BROWSER_PRIORITY")
    if priority:
        if priority not in BROWSER_PRIORITIES:
            raise SettingsError(
                f"browser_priority: expected one of {', '.join(BROWSER_PRIORITIES)}, "
                f"got {priority!r}"
            )
        values["browser_priority"] = priority
    browser = flags.get("browser_path") or environ.get("AGENT_BROWSER_PATH")
    if browser:
        values["browser_path"] = Path(str(browser))
    cpus = flags.get("browser_cpus") or environ.get("AGENT_BROWSER_CPUS")
    if cpus:
        values["browser_cpus"] = parse_cpu_list(str(cpus), os.cpu_count() or 1)
    return AgentSettings(url=str(url).rstrip("/"), token=token, **values)


def parse_cpu_list(text: str, available: int) -> frozenset[int]:
    """CPUs as `taskset -c` writes them (`1-3`, `0,2`), each below `available`.

    Raises:
        SettingsError: not such a list, or a CPU this machine does not have.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise SettingsError(
                f"browser_cpus: expected CPUs like 1-3 or 0,2, got {text!r}"
            ) from None
        if first < 0 or last < first:
            raise SettingsError(f"browser_cpus: {part.strip()!r} is not a range of CPUs")
        cpus.update(range(first, last + 1))
    beyond = sorted(cpu for cpu in cpus if cpu >= available)
    if beyond:
        raise SettingsError(
            f"browser_cpus: this machine has CPUs 0-{available - 1}, not {beyond[0]}"
        )
    return frozenset(cpus)


def _read(
    flags: Mapping[str, object], environ: Mapping[str, str], name: str, variable: str
) -> tuple[object | None, str]:
    """A setting's raw value (None: unset; an empty variable counts as unset) and where it
    was read, to name in an error: its flag, or its environment variable."""
    if flags.get(name) is not None:
        return flags[name], f"--{name.replace('_', '-')}"
    raw = environ.get(variable)
    return (raw or None), variable
