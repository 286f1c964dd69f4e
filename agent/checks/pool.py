"""The agent's HTTP clients: the probe transport, or httpx's pooled one behind a proxy."""

from __future__ import annotations

import itertools
import ssl
import urllib.request
from collections.abc import Awaitable, Callable, Hashable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any

import httpx

from agent.checks.limits import ResponseLimits
from agent.checks.transport import ProbeTransport

DEFAULT_SIZE = 16
DEFAULT_CONNECTIONS = 32
USER_AGENT = "canary-reconciler-agent/0.1"


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing: a check never sends cookies another check's target set."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class ClientPool:
    """The `httpx.AsyncClient`s that HTTP checks use, handed out in turn.

    Without a proxy, and without `keepalive`, requests go through `ProbeTransport`: a new
    connection per request, so every check measures its own TCP connect and TLS handshake,
    at a fraction of httpcore's cost and with nothing pooled that a cancelled check could
    leave stuck. `size` clients share it (one would do; they differ only in cookies).

    When proxy variables are set in the environment (`trust_env`, the default) or
    `keepalive=True`, the clients use httpx's own transport instead: several small pools,
    because one client shared by many concurrent requests spends its time managing one big
    pool. All clients share one TLS context.

    Use as `async with ClientPool(size=16) as pool: ... pool.client()`.
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        *,
        connections_per_client: int = DEFAULT_CONNECTIONS,
        keepalive: bool = False,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = True,
        limits: ResponseLimits | None = None,
    ) -> None:
        """Create the clients (they open connections only when used).

        Args:
            size: How many clients to spread requests over.
            connections_per_client: Connection limit of each client.
            keepalive: Keep idle connections open for reuse by later checks.
            verify: A TLS context, or whether to verify certificates with the default one.
            trust_env: Honour proxy and certificate environment variables.
            limits: How much of a response the checks read (header count and sizes, body).

        Raises:
            ValueError: `size` or `connections_per_client` is below 1.
        """
        if size < 1 or connections_per_client < 1:
            raise ValueError("size and connections_per_client must be at least 1")
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        )
        self._limits = httpx.Limits(
            max_connections=connections_per_client,
            max_keepalive_connections=connections_per_client if keepalive else 0,
        )
        self._trust_env, self._keepalive = trust_env, keepalive
        self.limits = limits or ResponseLimits()
        self.uses_proxy = trust_env and bool(urllib.request.getproxies())
        self._clients = tuple(self._new_client(context) for _ in range(size))
        self._turn = itertools.cycle(self._clients)
        # Clients of checks with their own TLS settings (canary-checker's tlsConfig), by them.
        self._tls_clients: dict[tuple[bool, str], httpx.AsyncClient] = {}
        # Connections other check types keep between runs (grpc channels), with their closers.
        self._kept: dict[Hashable, tuple[Any, Callable[[Any], Awaitable[None]]]] = {}

    def _new_client(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        probe = None if self.uses_proxy or self._keepalive else ProbeTransport(context, self.limits)
        return httpx.AsyncClient(
            verify=context,
            limits=self._limits,
            trust_env=self._trust_env,
            # Only what `limits.read_body` inflates within its bound.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
            cookies=_no_cookies(),
            transport=probe,
        )

    def __len__(self) -> int:
        return len(self._clients)

    def client(self) -> httpx.AsyncClient:
        """The next client in turn."""
        return next(self._turn)

    def tls_client(self, insecure: bool, ca: str | None) -> httpx.AsyncClient:
        """A client with its own TLS settings, made on first use and kept.

        Args:
            insecure: Skip certificate verification (canary-checker's insecureSkipVerify).
            ca: PEM certificates to trust besides the system's, or None.

        Raises:
            ssl.SSLError: `ca` holds no usable certificate.
        """
        key = (insecure, ca or "")
        client = self._tls_clients.get(key)
        if client is None:
            context = ssl.create_default_context()
            if ca:
                context.load_verify_locations(cadata=ca)
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            client = self._tls_clients[key] = self._new_client(context)
        return client

    def kept(self, key: Hashable) -> Any:
        """A connection kept under `key` by `keep`, or None."""
        found = self._kept.get(key)
        return None if found is None else found[0]

    def keep(self, key: Hashable, value: Any, close: Callable[[Any], Awaitable[None]]) -> None:
        """Keep a connection of another check type until replaced or the pool closes.

        Args:
            key: What identifies the connection (type, endpoint, TLS settings).
            value: The connection.
            close: How to close it.
        """
        self._kept[key] = (value, close)

    async def discard(self, key: Hashable) -> None:
        """Close and forget the connection kept under `key` (nothing when there is none)."""
        found = self._kept.pop(key, None)
        if found is not None:
            await found[1](found[0])

    async def aclose(self) -> None:
        """Close every client and its connections, and every kept connection."""
        for client in (*self._clients, *self._tls_clients.values()):
            await client.aclose()
        for key in list(self._kept):
            await self.discard(key)

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
