"""The agent's HTTP clients: the probe transport, or httpx's pooled one behind a proxy."""

from __future__ import annotations

import itertools
import ssl
import urllib.request
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType

import httpx

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
    ) -> None:
        """Create the clients (they open connections only when used).

        Args:
            size: How many clients to spread requests over.
            connections_per_client: Connection limit of each client.
            keepalive: Keep idle connections open for reuse by later checks.
            verify: A TLS context, or whether to verify certificates with the default one.
            trust_env: Honour proxy and certificate environment variables.

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
        limits = httpx.Limits(
            max_connections=connections_per_client,
            max_keepalive_connections=connections_per_client if keepalive else 0,
        )
        self.uses_proxy = trust_env and bool(urllib.request.getproxies())
        probe = None if self.uses_proxy or keepalive else ProbeTransport(context)
        self._clients = tuple(
            httpx.AsyncClient(
                verify=context,
                limits=limits,
                trust_env=trust_env,
                headers={"User-Agent": USER_AGENT},
                cookies=_no_cookies(),
                transport=probe,
            )
            for _ in range(size)
        )
        self._turn = itertools.cycle(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    def client(self) -> httpx.AsyncClient:
        """The next client in turn."""
        return next(self._turn)

    async def aclose(self) -> None:
        """Close every client and its connections."""
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
