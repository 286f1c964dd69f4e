"""`reconcile serve`: run the control plane until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson
import uvicorn
import watchfiles

from reconciler.gateway.nginx import NginxGateway
from reconciler.server.control_plane import ControlPlane
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.server.controllers.incidents import IncidentController, interval_from
from reconciler.server.controllers.site_rebuilds import SiteRebuilder
from reconciler.server.http.app import create_app
from reconciler.server.local_agent import LocalAgent
from reconciler.server.notify import Notifier, parse_hooks
from reconciler.server.settings import ServeSettings
from reconciler.sources.follow import ConfigSource, WorktreeSource, open_source
from reconciler.sources.gitrepo import find_repository
from reconciler.sources.worktree import is_config_path
from reconciler.store.handle import StateHandle

log = logging.getLogger("reconciler.server.main")


class ReconcileLoop:
    """Coalesces triggers (file changes, polls, webhooks) into one reconcile at a time."""

    def __init__(self, control: ControlPlane, debounce: float) -> None:
        self._control = control
        self._debounce = debounce
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()

    def trigger(self, reason: str) -> None:
        self._reasons.add(reason)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce)  # let a burst of file events settle
            self._wake.clear()
            reasons, self._reasons = self._reasons, set()
            await self._control.reconcile(", ".join(sorted(reasons)))


def _watch_filter(change: watchfiles.Change, path: str) -> bool:
    """Config files, and the git files that move when a commit or checkout happens."""
    normalised = path.replace(os.sep, "/")
    if "/.git/" in normalised:
        return normalised.endswith("/HEAD") or "/refs/heads/" in normalised
    return is_config_path(normalised.rsplit("/", 1)[-1]) and "/." not in normalised


async def _watch_worktree(source: WorktreeSource, trigger: Callable[[str], None]) -> None:
    paths = [source.path]
    location = find_repository(source.path)
    if location is not None and location.repo.git_dir:
        paths.append(Path(location.repo.git_dir))
    async for _ in watchfiles.awatch(*paths, watch_filter=_watch_filter, debounce=200):
        trigger("file change")


async def _poll(interval: float, trigger: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(interval)
        trigger("poll")


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


def configure_logging(fmt: str) -> None:
    """Text for people at a terminal, JSON lines for log collectors."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM once it has stopped, which would kill the process before
    queued results are stored; run_server handles the signals itself instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_file(state: Path) -> Path:
    """Where a running server says its URL, for CLI commands that need the state file."""
    return state.with_name(state.name + ".serve.json")


def _open_gateway(settings: ServeSettings) -> NginxGateway | None:
    """Start the nginx the server manages for canary weights, when asked to.

    Raises:
        GatewayError: nginx is not installed or does not start.
    """
    if settings.gateway != "nginx":
        return None
    host, _, port = settings.gateway_listen.rpartition(":")
    directory = settings.gateway_dir or settings.state.with_name(settings.state.name + ".gateway")
    gateway = NginxGateway(directory, (host.strip("[]"), int(port)))
    gateway.start()
    log.info("nginx gateway on http://%s (prefix %s)", settings.gateway_listen, directory)
    return gateway


def _request_exit(server: uvicorn.Server) -> None:
    log.info("stopping: no new requests; finishing in-flight ones and storing queued results")
    server.should_exit = True


async def run_server(
    settings: ServeSettings,
    environ: Mapping[str, str],
    clock: Callable[[], datetime],
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until the process is asked to stop; every accepted result is stored before exit.

    Raises:
        StateError: the state file is locked by another process or unusable.
        GitSourceError, FileNotFoundError: the config repository cannot be opened.
    """
    cache = settings.cache_dir or settings.state.with_name(settings.state.name + ".cache")
    source: ConfigSource = open_source(settings.repo, cache, settings.branch)
    state = StateHandle(settings.state, settings.lock_timeout)
    control = ControlPlane(settings, state, source, environ, clock)
    loop = ReconcileLoop(control, settings.debounce)
    app = create_app(control, loop.trigger)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            lifespan="off",
            access_log=False,
        )
    )
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, _request_exit, server)
    hooks = parse_hooks(settings.notify_urls)
    if hooks:
        control.notifier = Notifier(hooks, settings.notify_secret, control.metrics, clock)
        control.notifier.start()
        log.info("notifications go to %d webhook(s)", len(hooks))
    await control.start_serving()
    local_agent = LocalAgent(control)
    await local_agent.start()
    incidents = IncidentController(control, interval_from(environ))
    await incidents.start()
    gateway = _open_gateway(settings)
    control.deployments = DeploymentController(control, gateway, settings.canary_interval)
    await control.deployments.start()
    site_dir = settings.site_dir or settings.state.with_name(settings.state.name + ".site")
    control.site = SiteRebuilder(control, site_dir, settings.site_interval)
    await control.site.start()
    tasks = [asyncio.create_task(loop.run(), name="reconcile-loop")]
    if isinstance(source, WorktreeSource):
        tasks.append(asyncio.create_task(_watch_worktree(source, loop.trigger), name="watch"))
    else:
        tasks.append(asyncio.create_task(_poll(settings.poll_interval, loop.trigger), name="poll"))
    serving = asyncio.create_task(server.serve(), name="http")
    info = server_file(settings.state)
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{settings.host}:{port}"
            info.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
            log.info("serving %s on %s (state %s)", source.description, url, settings.state)
            if on_ready is not None:
                on_ready(url)
            loop.trigger("startup")
        await serving
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await local_agent.stop()
        await incidents.stop()
        await control.deployments.stop()
        await control.site.stop()
        if gateway is not None:
            gateway.stop()
        if control.notifier is not None:
            await control.notifier.stop()
        await control.stop()
        info.unlink(missing_ok=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(signum)
        log.info("stopped; every accepted result is stored")
