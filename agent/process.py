"""Process plumbing the agent and the server share: log lines, the event loop and the
cyclic garbage collector."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the error if any."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document)


class HostOnlyUrls(logging.Filter):
    """Cuts the URLs in httpx's log lines to scheme, host and port.

    httpx logs every request with its full URL at INFO; a Slack webhook carries its token in
    the path, and a check or a receiver may carry one in the query or the user info.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name == "httpx" or record.name.startswith("httpx.")) and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_origin(arg) for arg in args)
        return True


def _origin(value: object) -> object:
    if isinstance(value, int | float):
        return value
    text = str(value)  # httpx passes an `httpx.URL`
    if not text.startswith(("http://", "https://")):
        return value
    parts = urlsplit(text)
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"


def configure_logging(fmt: str, quiet: Iterable[str] = ()) -> None:
    """Text for people at a terminal, JSON lines for log collectors.

    Args:
        fmt: `text` or `json`.
        quiet: loggers that only say warnings and errors (e.g. httpx, which logs every
            request at INFO; its URLs are cut to the host either way, by `HostOnlyUrls`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(HostOnlyUrls())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (cheaper sockets and timers), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def freeze_survivors() -> None:
    """Take every object alive now out of the cyclic collector's full passes (`gc.freeze`).

    A full collection walks every object that survived the younger ones: in an agent, nearly
    all of them are its modules (httpx, grpc, pydantic, CEL, Playwright), its applied config
    and its kept clients, which live as long as the process. With 600 HTTP checks a second
    and browser checks beside them, such a pass took 70-120 ms a few times a minute, and
    every check due meanwhile started that much late (`bench/agent_load.py --browser 2`);
    with them frozen, 10-35 ms. `agent run` calls it after start-up, after each applied config
    and after the first browser check; objects made later are collected as before. A frozen
    object that later becomes part of a garbage cycle is not reclaimed: a config's removed
    canaries, a few kilobytes a commit.
    """
    gc.freeze()
