"""The registry of one demo's local backends, created as the config rewrite asks for them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.demo.http_backends import HttpService, RouteBackend, flaky_search, healthy_pages
from reconciler.demo.listeners import DnsResponder, TcpListener, TlsListener

# Hosts whose checks go to the flaky service instead of the healthy one.
FLAKY_HOST_PREFIXES = ("search.",)


@dataclass(frozen=True)
class RouteGroup:
    """The local backends that stand in for one traffic group of a route."""

    route: str
    group: str
    backends: tuple[RouteBackend, ...]


class DemoBackends:
    """Every local service of a demo run. All bind 127.0.0.1 on ports the OS picks."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.healthy = HttpService("healthy", healthy_pages)
        self.flaky = HttpService("flaky", flaky_search())
        self.dns = DnsResponder()
        self.tcp: dict[str, TcpListener] = {}
        self.tls: dict[str, TlsListener] = {}
        self.groups: dict[tuple[str, str], RouteGroup] = {}
        self._backends: dict[str, RouteBackend] = {}

    def http_url(self, url: str) -> tuple[str, str]:
        """A local URL for a check's URL (same path and query), and the service's name."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        service = self.flaky if host.startswith(FLAKY_HOST_PREFIXES) else self.healthy
        query = f"?{parts.query}" if parts.query else ""
        return f"{service.url}{parts.path or '/'}{query}", service.name

    def tcp_endpoint(self, endpoint: str) -> str:
        """A local listener's `127.0.0.1:PORT` for a TCP check's endpoint (one per endpoint)."""
        if endpoint not in self.tcp:
            self.tcp[endpoint] = TcpListener(endpoint)
        return self.tcp[endpoint].endpoint

    def tls_endpoint(self, endpoint: str, server_name: str) -> str:
        """A local TLS listener's endpoint with a certificate for `server_name`."""
        if server_name not in self.tls:
            self.tls[server_name] = TlsListener([server_name], self.directory / "tls")
        return self.tls[server_name].endpoint

    def route_backend(self, route: str, group: str, url: str) -> RouteBackend:
        """The local backend standing in for one backend URL of a route's group."""
        key = f"{route} {group} {url}"
        if key not in self._backends:
            label = (urlsplit(url).hostname or "backend").split(".")[0]
            backend = RouteBackend(f"{route}/{group}/{label}")
            self._backends[key] = backend
            found = self.groups.get((route, group))
            members = found.backends if found else ()
            self.groups[(route, group)] = RouteGroup(route, group, (*members, backend))
        return self._backends[key]

    def services(self) -> list[tuple[str, str, str]]:
        """(name, address, what it stands in for), for the start-up report."""
        found = [
            ("healthy", self.healthy.url, "the sample's HTTP checks (shop, API, login, ...)"),
            ("flaky", self.flaky.url, "the search API; ~30% of requests answer 503"),
            ("dns", f"udp://{self.dns.endpoint}", "the DNS checks' resolver"),
        ]
        found += [(f"tcp {name}", t.endpoint, "accepts and closes") for name, t in self.tcp.items()]
        found += [
            (f"tls {name}", t.endpoint, "self-signed certificate, 90 days")
            for name, t in self.tls.items()
        ]
        found += [
            (backend.name, backend.url, "answers its name; POST /break, POST /fix")
            for group in self.groups.values()
            for backend in group.backends
        ]
        return found

    def close(self) -> None:
        """Stop every service (each one's failure to stop does not keep the others running)."""
        closers = [self.healthy.close, self.flaky.close, self.dns.close]
        closers += [t.close for t in self.tcp.values()] + [t.close for t in self.tls.values()]
        closers += [b.close for b in self._backends.values()]
        for close in closers:
            with contextlib.suppress(OSError):
                close()
