"""`reconcile serve`'s composition root: start the parts in order, stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import os
import resource
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import uvicorn
from fastapi import FastAPI

from reconciler.gateway.base import Gateway
from reconciler.gateway.nginx import NginxGateway
from reconciler.server.address_file import server_file
from reconciler.server.binding import bind_problem
from reconciler.server.control_plane import ControlPlane
from reconciler.server.controllers.agent_silence import AgentSilence
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.server.controllers.gateway_watch import GatewayWatch
from reconciler.server.controllers.history import HistoryKeeper
from reconciler.server.controllers.incidents import IncidentController, interval_from
from reconciler.server.controllers.maintenance import MaintenanceGate
from reconciler.server.controllers.site_rebuilds import SiteRebuilder
from reconciler.server.heartbeats import Heartbeats
from reconciler.server.http.app import Controllers, create_app
from reconciler.server.http.listener import CUT_METRIC, ReadLimits, guarded_protocol
from reconciler.server.local_agent import LocalAgent
from reconciler.server.notify import Notifications, announcer, parse_hooks
from reconciler.server.reconcile_loop import ReconcileLoop
from reconciler.server.settings import SITE_RENDER_WORKERS, ServeSettings, listen_address
from reconciler.sources.follow import ConfigSource, WorktreeSource, open_source, watch_worktree
from reconciler.store.archive import history_dir
from reconciler.store.handle import StateHandle

log = logging.getLogger("reconciler.serve")

GatewayOpener = Callable[[ServeSettings], Gateway | None]


def open_nginx_gateway(settings: ServeSettings) -> Gateway | None:
    """Start the nginx the server manages for canary weights, when asked to.

    Raises:
        GatewayError: nginx is not installed or does not start.
    """
    if settings.gateway != "nginx":
        return None
    directory = settings.gateway_dir or settings.state.with_name(settings.state.name + ".gateway")
    gateway = NginxGateway(directory, listen_address(settings.gateway_listen))
    gateway.start()
    log.info("nginx gateway on http://%s (prefix %s)", settings.gateway_listen, directory)
    return gateway


@dataclass(frozen=True)
class Parts:
    """The running parts of a server, for the HTTP layer and for tests."""

    app: FastAPI
    control: ControlPlane
    controllers: Controllers
    loop: ReconcileLoop
    source: ConfigSource


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def running_parts(
    settings: ServeSettings,
    environ: Mapping[str, str],
    clock: Callable[[], datetime],
    open_gateway: GatewayOpener = open_nginx_gateway,
) -> AsyncIterator[Parts]:
    """Start every part of the server but the HTTP listener; stop them all on the way out.

    Each part is registered for stopping as soon as it has started, so a part that fails to
    start (nginx refusing its config, say) stops the ones before it, in reverse order; the
    state file is released last, after every accepted result is stored.

    Raises:
        StateError: the state file is locked by another process or unusable.
        GitSourceError, FileNotFoundError: the config repository cannot be opened.
        GatewayError: the gateway does not start.
    """
    cache = settings.cache_dir or settings.state.with_name(settings.state.name + ".cache")
    source = open_source(settings.repo, cache, settings.branch)
    async with contextlib.AsyncExitStack() as stack:
        state = StateHandle(settings.state, settings.lock_timeout)
        control = ControlPlane(settings, state, source, environ, clock)
        hooks = parse_hooks(settings.notify_urls)
        notifications = Notifications(
            hooks,
            settings.notify_secret,
            control.metrics,
            clock,
            environ,
            loops=control.loops,
            state=control.state,
        )
        notifications.start()
        if hooks:
            log.info("without an AlertRouting, notifications go to %d webhook(s)", len(hooks))
        # Each served revision's Receivers and AlertRouting (the stored one at start too).
        control.on_publish.append(lambda: notifications.configure(control.resources))
        # Incident events of canaries in an open maintenance window stop here, counted.
        announce = MaintenanceGate(
            announcer(notifications), lambda: control.maintenance, clock, control.metrics
        )
        notifications.hold_reminders(announce.holds)  # and reminders of incidents open before
        stack.push_async_callback(control.stop)  # stores queued results, releases the file
        # Stopped before the state file is released: its last deliveries are stored.
        stack.push_async_callback(notifications.stop)
        await control.start_serving()
        await notifications.restore()

        local_agent = LocalAgent(control)
        await local_agent.start()
        stack.push_async_callback(local_agent.stop)
        heartbeats = Heartbeats(control)  # pings and missed deadlines, as agent `local`
        await heartbeats.start()
        stack.push_async_callback(heartbeats.stop)

        incidents = IncidentController(
            control.state,
            clock,
            lambda: control.resources,
            announce,
            control.metrics,
            settings.max_result_age,
            interval_from(environ),
            loops=control.loops,
        )
        await incidents.start()
        stack.push_async_callback(incidents.stop)
        control.gauges.append(
            lambda: [("incidents_open", "Open incidents.", (), incidents.open_count)]
        )

        gateway = open_gateway(settings)
        if gateway is not None:
            stack.callback(gateway.stop)
            # Started again whenever it is found gone (stopped first on the way out).
            watch = GatewayWatch(gateway, control.metrics, loops=control.loops)
            await watch.start()
            stack.push_async_callback(watch.stop)
        deployments = DeploymentController(
            control.state,
            clock,
            lambda: control.resources_of("Route"),
            announce,
            gateway,
            settings.canary_interval,
            loops=control.loops,
            results_version=lambda: control.results_version,
        )
        control.on_publish.append(deployments.wake)
        await deployments.start()
        stack.push_async_callback(deployments.stop)

        site_dir = settings.site_dir or settings.state.with_name(settings.state.name + ".site")
        site = SiteRebuilder(
            control.state,
            clock,
            site_dir,
            settings.site_interval,
            loops=control.loops,
            agent_silent_after=timedelta(seconds=settings.agent_silent_after)
            if settings.agent_silent_after > 0
            else None,
            workers=SITE_RENDER_WORKERS,
        )
        control.on_publish.append(site.wake)
        await site.start()
        stack.push_async_callback(site.stop)
        control.gauges.append(site.gauges)

        silence: AgentSilence | None = None
        if settings.agent_silent_after > 0:
            silence = AgentSilence(
                control.state,
                clock,
                control.agent_activity,
                control.restore_activity,
                control.enabled_agents,
                announce,
                timedelta(seconds=settings.agent_silent_after),
                interval=min(30.0, settings.agent_silent_after / 4),
                loops=control.loops,
            )
            await silence.start()
            stack.push_async_callback(silence.stop)
            watching = silence
            control.gauges.append(
                lambda: [
                    ("agents_silent", "Enabled agents not heard from.", (), len(watching.silent))
                ]
            )

        history = HistoryKeeper(
            control.state,
            clock,
            settings.history or history_dir(settings.state),
            timedelta(days=settings.archive_after),
            timedelta(days=settings.delete_after) if settings.delete_after else None,
            loops=control.loops,
        )
        await history.start()
        stack.push_async_callback(history.stop)
        control.gauges.append(
            lambda: [
                ("history_runs", "Archiving runs of old results.", (), history.runs),
            ]
        )

        loop = ReconcileLoop(control.reconcile, settings.debounce, control.loops)
        follow: Callable[[], Awaitable[None]] = (
            functools.partial(watch_worktree, source, loop.trigger)
            if isinstance(source, WorktreeSource)
            else functools.partial(loop.poll, settings.poll_interval)
        )
        for name, work in (("reconcile", loop.run), ("follow-source", follow)):
            stack.push_async_callback(_cancel, control.loops.task(name, work))

        controllers = Controllers(incidents, deployments, site, silence, notifications, heartbeats)
        app = create_app(control, loop.trigger, controllers)
        stack.callback(control.release_pulls)  # first at exit: held pulls answer at once
        yield Parts(app, control, controllers, loop, source)


def _counter(control: ControlPlane) -> Callable[[str], None]:
    """Counts the requests the listener cuts off (too slow, too large) in /metrics."""
    control.metrics.help[CUT_METRIC] = "Requests cut off by the listener's read limits, by reason."
    return lambda reason: control.metrics.count(CUT_METRIC, reason=reason)


# Allocations between young-generation collections (Python's default is 700): a batch of
# 500 result rows allocates a few thousand objects, nearly all freed when its request ends.
YOUNG_COLLECTION_ALLOCATIONS = 10_000


def _settle_collector() -> None:
    """Keep what start-up built out of the garbage collector's passes, and run them less often.

    The app, the config and the caches live as long as the process, yet every full pass
    rescanned them; a result batch allocates thousands of objects (rows, datetimes), so with
    the default thresholds those passes ran every few batches and cost more than the batches.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, older, oldest)


def _allow_open_files(connections: int) -> None:
    """Raise the soft limit of open files so that `connections` sockets fit (held pulls keep
    one per agent), up to the hard limit; warn when even that is too low."""
    wanted = connections + 256  # the state file, git, logs, nginx pipes …
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted or soft == resource.RLIM_INFINITY:
        return
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    if soft < wanted:
        log.warning(
            "open files are limited to %d (ulimit -n), fewer than the %d connections "
            "--max-connections allows: raise the limit or lower --max-connections",
            soft,
            connections,
        )


# On stop, how long requests in flight (their bodies arrived) get to be answered; then uvicorn
# cancels them. A client that stops reading its answer cannot hold up the exit longer.
# Bodies still arriving get `listener.STOP_UPLOAD_GRACE` (1 s) and are cut off with 503.
DRAIN_SECONDS = 10


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM once it has stopped, which would kill the process before
    queued results are stored; run_server handles the signals itself instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def force_stop(self) -> None:
        """Stop serving now, as a second SIGTERM or Ctrl-C asks: every connection is dropped,
        answered or not, and nothing more is waited for. A request cut off this way got no
        answer, so its client sends it again; rows already queued are still stored."""
        self.should_exit = self.force_exit = True
        for connection in list(self.server_state.connections):
            connection.transport.abort()


class ListenError(Exception):
    """The HTTP listener's address cannot be bound."""


def check_listen(host: str, port: int) -> None:
    """Refuse an address the listener cannot bind (`binding.bind_problem`): uvicorn would log
    it and exit 3, once the state was opened and the config applied. Port 0 (any free port)
    is not checked.

    Raises:
        ListenError: saying why, and what to do.
    """
    problem = bind_problem(host, port) if port else None
    if problem is None:
        return
    why = problem.strerror or str(problem)
    if isinstance(problem, socket.gaierror):
        raise ListenError(f"cannot listen on {host}:{port}: {why}")
    hint = (
        "pass --port with another port (0 picks a free one)"
        if problem.errno == errno.EADDRINUSE
        else "pass --host with an address of this machine"
    )
    raise ListenError(f"cannot listen on {host}:{port}: {why}; {hint}")


async def run_server(
    settings: ServeSettings,
    environ: Mapping[str, str],
    clock: Callable[[], datetime],
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until the process is asked to stop; every accepted result is stored before exit.

    On SIGTERM or SIGINT the listener closes, bodies still arriving are cut off after a second
    (`listener.STOP_UPLOAD_GRACE`), requests in flight get `DRAIN_SECONDS` to be answered,
    then the parts stop. A second SIGTERM or SIGINT drops the requests still in flight at once.

    Raises:
        StateError: the state file is locked by another process or unusable.
        GitSourceError, FileNotFoundError: the config repository cannot be opened.
        GatewayError: the gateway does not start.
        ListenError: the listener's address cannot be bound.
    """
    check_listen(settings.host, settings.port)
    running = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server: _Server | None = None
    release_pulls: Callable[[], None] | None = None

    def request_exit() -> None:
        if stopping.is_set():
            # Asked again (uvicorn's log says "CTRL+C to force quit"): stop waiting for clients.
            log.warning("asked again to stop: dropping the requests still in flight")
            if server is not None:
                server.force_stop()
            return
        log.info("stopping: no new requests; finishing in-flight ones and storing queued results")
        stopping.set()
        if release_pulls is not None:
            release_pulls()  # held config pulls answer now rather than at the end of their wait
        if server is not None:
            server.should_exit = True

    reconcile: Callable[[str], None] | None = None

    def hang_up() -> None:
        # As daemons take it: read the configuration again (here, the repository now, as a
        # webhook asks), rather than the default of dying.
        if reconcile is None:
            log.info("SIGHUP while starting: the first reconcile reads the repository anyway")
            return
        log.info("SIGHUP: reading the config repository now")
        reconcile("SIGHUP")

    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, request_exit)
    running.add_signal_handler(signal.SIGHUP, hang_up)
    try:
        async with running_parts(settings, environ, clock) as parts:
            # Asked to stop while starting: nothing to serve, but stopped as any other stop.
            if not stopping.is_set():
                release_pulls = parts.control.release_pulls
                reconcile = parts.loop.trigger
                _allow_open_files(settings.max_connections)
                _settle_collector()
                server = _Server(_listener_config(settings, parts))
                info = server_file(settings.state)
                try:
                    await _serve(server, settings, parts, info, on_ready)
                finally:
                    info.unlink(missing_ok=True)
        log.info("stopped; every accepted result is stored")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            running.remove_signal_handler(signum)


def _listener_config(settings: ServeSettings, parts: Parts) -> uvicorn.Config:
    """uvicorn's settings for the app of `parts`, with the read limits of `settings`."""
    return uvicorn.Config(
        parts.app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="off",
        access_log=False,
        # Read limits (docs/limits.md): slow or oversized requests are cut off.
        http=guarded_protocol(ReadLimits.of(settings, _counter(parts.control))),
        timeout_keep_alive=settings.keep_alive_timeout,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )


async def _serve(
    server: _Server,
    settings: ServeSettings,
    parts: Parts,
    info: Path,
    on_ready: Callable[[str], None] | None,
) -> None:
    serving = asyncio.create_task(server.serve(), name="http")
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    port = _bound_port(server) if server.started else None
    if port is not None:
        url = f"http://{settings.host}:{port}"
        # Written aside and renamed: a CLI command that sees the file can read it whole.
        temporary = info.with_name(info.name + ".tmp")
        temporary.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
        os.replace(temporary, info)
        log.info("serving %s on %s (state %s)", parts.source.description, url, settings.state)
        if on_ready is not None:
            on_ready(url)
        parts.loop.trigger("startup")
    await serving


def _bound_port(server: uvicorn.Server) -> int | None:
    """The port `server` listens on; None when it no longer listens.

    A stop asked for just as the listener bound (SIGTERM a second after start) closes its
    sockets before `_serve` looks at them: there is then no address to announce, and the
    server is stopping anyway.
    """
    for listener in getattr(server, "servers", []):
        for bound in listener.sockets:
            return int(bound.getsockname()[1])
    return None
