"""Settings of `reconcile serve`: flags over environment over a TOML file over defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENVIRONMENT = {
    "repo": "RECONCILER_REPO",
    "state": "RECONCILER_STATE",
    "lock_timeout": "RECONCILER_LOCK_TIMEOUT",
    "host": "RECONCILER_HOST",
    "port": "RECONCILER_PORT",
    "branch": "RECONCILER_BRANCH",
    "poll_interval": "RECONCILER_POLL_INTERVAL",
    "debounce": "RECONCILER_DEBOUNCE",
    "local_region": "RECONCILER_LOCAL_REGION",
    "clock_skew": "RECONCILER_CLOCK_SKEW",
    "max_result_age": "RECONCILER_MAX_RESULT_AGE",
    "max_batch_bytes": "RECONCILER_MAX_BATCH_BYTES",
    "max_batch_rows": "RECONCILER_MAX_BATCH_ROWS",
    "header_timeout": "RECONCILER_HEADER_TIMEOUT",
    "body_timeout": "RECONCILER_BODY_TIMEOUT",
    "keep_alive_timeout": "RECONCILER_KEEP_ALIVE_TIMEOUT",
    "max_header_bytes": "RECONCILER_MAX_HEADER_BYTES",
    "max_connections": "RECONCILER_MAX_CONNECTIONS",
    "webhook_replay_window": "RECONCILER_WEBHOOK_REPLAY_WINDOW",
    "cache_dir": "RECONCILER_CACHE_DIR",
    "notify_urls": "RECONCILER_NOTIFY_URLS",
    "gateway": "RECONCILER_GATEWAY",
    "gateway_listen": "RECONCILER_GATEWAY_LISTEN",
    "gateway_dir": "RECONCILER_GATEWAY_DIR",
    "canary_interval": "RECONCILER_CANARY_INTERVAL",
    "site_dir": "RECONCILER_SITE_DIR",
    "site_interval": "RECONCILER_SITE_INTERVAL",
    "history": "RECONCILER_HISTORY",
    "probe_metrics": "RECONCILER_PROBE_METRICS",
    "agent_silent_after": "RECONCILER_AGENT_SILENT_AFTER",
    "probe_metrics_window": "RECONCILER_PROBE_METRICS_WINDOW",
    "archive_after": "RECONCILER_ARCHIVE_AFTER",
    "delete_after": "RECONCILER_DELETE_AFTER",
}

# Secrets come from the environment only: never from flags (visible in `ps`) or files in git.
SECRETS = {
    "admin_token": "RECONCILER_ADMIN_TOKEN",
    "read_token": "RECONCILER_READ_TOKEN",
    "webhook_secret": "RECONCILER_WEBHOOK_SECRET",
    "notify_secret": "RECONCILER_NOTIFY_SECRET",
}


# Processes rendering the status site's pages, in the server and in `reconcile site build`:
# two on two CPUs draw a minute's 3,200-5,000 pages at 1,000 canaries in about three quarters
# of the time one takes (bench/README.md).
SITE_RENDER_WORKERS = min(2, os.cpu_count() or 1)

# Intervals, and limits of the HTTP listener: zero or less would spin, refuse everything or
# wait forever.
POSITIVE = (
    "poll_interval",
    "canary_interval",
    "site_interval",
    "max_result_age",
    "probe_metrics_window",
    "max_batch_bytes",
    "max_batch_rows",
    "header_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "max_header_bytes",
    "max_connections",
    "webhook_replay_window",
)
# Settings where 0 means something (try once, no wait, no tolerance, off), below it nothing.
NOT_NEGATIVE = ("lock_timeout", "debounce", "clock_skew", "agent_silent_after")


MAX_PORT = 65_535


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything `reconcile serve` is configured with."""

    repo: str = "."
    state: Path = Path("reconciler.duckdb")
    lock_timeout: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8080
    branch: str | None = None
    poll_interval: float = 60.0
    debounce: float = 0.3
    local_region: str = "default"
    clock_skew: float = 300.0
    max_result_age: float = 86_400.0
    max_batch_bytes: int = 4 * 1024 * 1024
    # A malformed row costs the validator as much as a good one: the row count is capped too.
    max_batch_rows: int = 20_000
    # Read timeouts and the connection cap: a slow or idle client must not hold a socket.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: int = 5
    max_header_bytes: int = 64 * 1024
    # Every agent holds one connection open (a held pull): room for a large fleet.
    max_connections: int = 10_000
    webhook_replay_window: float = 600.0
    cache_dir: Path | None = None
    notify_urls: str | None = None
    gateway: str = "none"
    gateway_listen: str = "127.0.0.1:8088"
    gateway_dir: Path | None = None
    canary_interval: float = 1.0
    site_dir: Path | None = None
    site_interval: float = 60.0
    history: Path | None = None  # default: <state>.history (docs/history.md)
    probe_metrics: str = "basic"  # per-check series on /metrics: off | basic | full
    # An enabled agent not heard from (pull or push) for this long is announced silent; 0: off.
    agent_silent_after: float = 300.0
    probe_metrics_window: float = 3600.0  # checks run within this long have series
    archive_after: int = 35  # days
    delete_after: int | None = None  # days; None keeps history forever
    admin_token: str | None = field(default=None, repr=False)
    read_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    notify_secret: str | None = field(default=None, repr=False)


def _coerce(name: str, value: Any, origin: str) -> Any:
    """A setting's value as its field's type (`origin`: where it was read, named in an error:
    `file.toml: key`, the environment variable or the flag)."""
    kind = {f.name: f.type for f in fields(ServeSettings)}[name]
    try:
        if kind in ("int", "int | None"):
            return int(str(value).removesuffix("d"))
        if kind in ("float",):
            return float(value)
        if "Path" in str(kind):
            return Path(value)
    except (TypeError, ValueError) as error:
        expected = {"float": "a number"}.get(str(kind), "a whole number")
        raise SettingsError(f"{origin}: {value!r} is not {expected}") from error
    return str(value)


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> ServeSettings:
    """Merge the sources of settings, most specific first: flags, environment, TOML file.

    Raises:
        SettingsError: an unknown key in the file, or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    # Where each value was read, to name it in an error: `file.toml: key`, the variable, the flag.
    origins: dict[str, str] = {}
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"{config_file}: {error}") from error
        section = document.get("serve", document)
        known = set(ENVIRONMENT)
        for key, value in section.items():
            if key not in known:
                allowed = ", ".join(sorted(known))
                hint = " (secrets come from the environment only)" if key in SECRETS else ""
                raise SettingsError(
                    f"{config_file}: unknown setting {key!r}{hint}; known: {allowed}"
                )
            values[key], origins[key] = value, f"{config_file}: {key}"
    for key, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[key], origins[key] = environ[variable], variable
    for key, value in flags.items():
        if value is not None:
            values[key], origins[key] = value, f"--{key.replace('_', '-')}"
    values = {key: _coerce(key, value, origins[key]) for key, value in values.items()}
    for key, variable in SECRETS.items():
        values[key] = environ.get(variable) or None
    settings = replace(ServeSettings(), **values)

    def read(name: str) -> str:  # a refused value's name, as where it was read says it
        return origins.get(name, name)

    if settings.archive_after < 1:
        raise SettingsError(f"{read('archive_after')}: {settings.archive_after} days; at least 1")
    if settings.delete_after is not None and settings.delete_after < settings.archive_after:
        raise SettingsError(
            f"{read('delete_after')} ({settings.delete_after} days) is less than archive_after "
            f"({settings.archive_after} days): it would delete days still live"
        )
    if settings.probe_metrics not in ("off", "basic", "full"):
        raise SettingsError(
            f"{read('probe_metrics')}: {settings.probe_metrics!r} is not one of: off, basic, full"
        )
    from schemas.base import slug_problem  # here: `--help` imports no pydantic (test_startup)

    if problem := slug_problem(settings.local_region):
        raise SettingsError(f"{read('local_region')}: {problem}")
    if settings.gateway not in ("none", "nginx"):
        raise SettingsError(f"{read('gateway')}: {settings.gateway!r} is not one of: none, nginx")
    for name in POSITIVE:
        if not getattr(settings, name) > 0:
            raise SettingsError(f"{read(name)}: {getattr(settings, name)!r} must be greater than 0")
    for name in NOT_NEGATIVE:
        if not getattr(settings, name) >= 0:
            raise SettingsError(f"{read(name)}: {getattr(settings, name)!r} must be 0 or more")
    if not 0 <= settings.port <= MAX_PORT:
        raise SettingsError(
            f"{read('port')}: {settings.port} is not a TCP port (0-{MAX_PORT}; 0: any)"
        )
    listen_address(settings.gateway_listen, read("gateway_listen"))
    return settings


def listen_address(text: str, name: str = "gateway_listen") -> tuple[str, int]:
    """`gateway_listen` (`HOST:PORT`, `[::1]:PORT` for IPv6) as a host and a port.

    Raises:
        SettingsError: no TCP port after the last `:`.
    """
    host, _, port = text.rpartition(":")
    if not (port.isdigit() and 0 <= int(port) <= MAX_PORT):
        raise SettingsError(
            f"{name}: {text!r} needs a TCP port (0-{MAX_PORT}) after its last ':', "
            "such as 127.0.0.1:8088"
        )
    return host.strip("[]"), int(port)
