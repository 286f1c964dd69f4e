"""A set of shared HTTP clients with small connection pools, used in turn."""

from __future__ import annotations

import itertools
import ssl
from types import TracebackType

import httpx

DEFAULT_SIZE = 16
DEFAULT_CONNECTIONS = 32
USER_AGENT = "canary-reconciler-agent/0.1"


class ClientPool:
    """Several `httpx.AsyncClient`s, each with a small connection pool, handed out in turn.

    One client shared by many concurrent requests spends its time managing one big pool,
    and a client per request spends it building TLS contexts; a handful of small pools
    avoids both. All clients share one TLS context.

    By default connections are not kept alive, so every HTTP check measures its own TCP
    connect and TLS handshake; `keepalive=True` trades that for throughput.

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
        self._clients = tuple(
            httpx.AsyncClient(
                verify=context,
                limits=limits,
                trust_env=trust_env,
                headers={"User-Agent": USER_AGENT},
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
