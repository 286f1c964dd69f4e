"""The in-process test tier: the server's parts on a real git repository and DuckDB file,
reached through httpx's ASGI transport instead of a socket and a subprocess.

Two ways in:
- `serving(...)`, an async context manager for `@pytest.mark.anyio` tests: the parts run on
  the test's own event loop and an `httpx.AsyncClient` talks to the app.
- `InProcessServer` / `running_in_process(...)`: the parts run on an event loop in a thread
  of their own, behind a synchronous `httpx.Client` with the surface of
  `tests.server.ServerProcess`, so a test reads the same as its end-to-end twin and a server
  can be shared by a module's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from reconciler.gateway.base import Gateway
from reconciler.server.main import GatewayOpener, Parts, running_parts
from reconciler.server.settings import load_settings
from tests.server import ADMIN_TOKEN, WEBHOOK_SECRET, ServerCalls, wait_for

T = TypeVar("T")

# The app is reached without a socket; the host only shows up in absolute URLs.
BASE_URL = "http://reconciler.test"
STARTUP_SECONDS = 30.0
REQUEST_SECONDS = 60.0


def server_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a test server sees: the test tokens, then `env` ("" unsets a name)."""
    environ = {
        "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **(env or {}),
    }
    return {name: value for name, value in environ.items() if value != ""}


def now() -> datetime:
    """The server's clock: the wall clock, as `reconcile serve` uses."""
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def running(
    repo: Path | str,
    state: Path,
    env: Mapping[str, str] | None = None,
    gateway: Gateway | None = None,
    open_gateway: GatewayOpener | None = None,
    site_on_publish: bool = False,
    **flags: Any,
) -> AsyncIterator[Parts]:
    """`running_parts` as `reconcile serve --repo REPO --state STATE` with `flags` would run it.

    The first reconcile is triggered, as the listener does once it is up; wait for
    `parts.control.ready` before relying on the config.

    Args:
        repo: the config repository (a working tree, a bare repository or a URL).
        state: the DuckDB state file.
        env: environment variables (settings, secrets, canary `${env:...}` values).
        gateway: the data plane the canary controller drives (default: none).
        open_gateway: how the gateway is opened, instead of `gateway`.
        site_on_publish: rebuild the status site after every applied revision, as the
            server does; off by default, because a site build is most of the CPU a start
            costs and few tests look at the site (it is still rebuilt on its timer,
            `site_interval`).
        **flags: settings as `ServeSettings` names them (`max_batch_bytes=2000`).
    """
    environ = server_environ(env)
    flags = {"repo": str(repo), "state": state, "debounce": 0.05, **flags}
    settings = load_settings(flags, environ)
    opener = open_gateway or (lambda _settings: gateway)
    async with running_parts(settings, environ, now, opener) as parts:
        if not site_on_publish:
            parts.control.on_publish.remove(parts.controllers.site.wake)
        parts.loop.trigger("startup")
        yield parts


@contextlib.asynccontextmanager
async def serving(
    repo: Path | str, state: Path, env: Mapping[str, str] | None = None, **options: Any
) -> AsyncIterator[tuple[Parts, httpx.AsyncClient]]:
    """`running` plus an `httpx.AsyncClient` bound to the app (for `@pytest.mark.anyio` tests)."""
    async with running(repo, state, env, **options) as parts:
        transport = httpx.ASGITransport(app=parts.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield parts, client


async def until_ready(parts: Parts, timeout: float = STARTUP_SECONDS) -> None:
    """Wait for the first applied revision (what /readyz waits for)."""
    await asyncio.wait_for(parts.control.ready.wait(), timeout)


class _LoopTransport(httpx.BaseTransport):
    """A synchronous transport that hands each request to the app on the server's loop."""

    def __init__(self, parts: Parts, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=parts.app)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def exchange() -> tuple[int, httpx.Headers, bytes]:
            response = await self._asgi.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        future = asyncio.run_coroutine_threadsafe(exchange(), self._loop)
        status, headers, body = future.result(REQUEST_SECONDS)
        return httpx.Response(status, headers=headers, content=body, request=request)


class _Captured(logging.Handler):
    """Keeps the server's log lines, as `reconcile serve`'s log file would show them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


class InProcessServer(ServerCalls):
    """The server's parts on their own event loop thread; `client` talks to the app."""

    def __init__(
        self,
        repo: Path | str,
        state: Path,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.repo, self.state, self.url = repo, state, BASE_URL
        self._options = dict(options)
        self._env = env
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._parts: Parts | None = None
        self._stopped = False
        self._log = _Captured()
        logger = logging.getLogger("reconciler")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self._log)
        self._thread = threading.Thread(target=self._run, name="in-process-server", daemon=True)
        self._thread.start()
        if not self._started.wait(STARTUP_SECONDS):
            raise AssertionError(f"the in-process server did not start in {STARTUP_SECONDS}s")
        if self._error is not None:
            self._thread.join()
            self._detach_log()
            raise self._error
        self.client = self.new_client()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self._error = error
            self._started.set()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        async with running(self.repo, self.state, self._env, **self._options) as parts:
            self._parts, self._loop = parts, asyncio.get_running_loop()
            self._started.set()
            await self._stopping.wait()

    @property
    def parts(self) -> Parts:
        """The running parts (control plane, controllers, reconcile loop, source, app)."""
        assert self._parts is not None
        return self._parts

    def new_client(self) -> httpx.Client:
        """Another client of the app (one per thread, for concurrent requests)."""
        assert self._loop is not None and self._parts is not None
        return httpx.Client(
            transport=_LoopTransport(self._parts, self._loop), base_url=BASE_URL, timeout=10
        )

    def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the server's loop (e.g. one controller tick) and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(REQUEST_SECONDS)

    def wait_ready(self) -> None:
        wait_for(self.parts.control.ready.is_set, 20, "the first revision to be applied")

    def logs(self) -> str:
        """What the server logged so far, one line per record."""
        return "\n".join(self._log.lines)

    def _detach_log(self) -> None:
        logger = logging.getLogger("reconciler")
        logger.removeHandler(self._log)
        logger.setLevel(self._level)

    def stop(self) -> None:
        """Stop every part (queued results are stored, the state file is released)."""
        if self._thread.is_alive() and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(STARTUP_SECONDS)
            if self._thread.is_alive():
                raise AssertionError("the in-process server did not stop")
        if not self._stopped:
            self._stopped = True
            self.client.close()
            self._detach_log()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def running_in_process(
    repo: Path | str, state: Path, env: Mapping[str, str] | None = None, **options: Any
) -> Iterator[InProcessServer]:
    """An `InProcessServer` for the block; stopped on the way out."""
    server = InProcessServer(repo, state, env, **options)
    try:
        yield server
    finally:
        server.stop()
