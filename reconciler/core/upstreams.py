"""Which backends our nginx data plane can put in an upstream: the one rule `drive` decides by
and the nginx config renders by.

nginx takes a backend as `server host:port` in a group's upstream and `proxy_pass`es the
client's own path and query to it, so a backend is scheme://host[:port] only. The host is
resolved by nginx when it loads the config: a name no resolver knows is refused there and
cannot be known from the spec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.route import TrafficGroup

# `${name}`, `${env:NAME}`: the agent fills them in check URLs; nothing fills them in a route
# (the gateway project fills a bare `${NAME}` from its own environment when it reads its file,
# and `${env:NAME}` only as a whole value, so inside a URL even it keeps that one as written).
_REFERENCE = re.compile(r"\$\{[^}]*\}")
# A host name as a resolver takes it: dot-separated labels of ASCII letters, digits, '-' and
# '_' (names in /etc/hosts and service discovery use it), a trailing dot allowed.
_HOST_NAME = re.compile(r"^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*\.?$")
_ONLY = "a backend is scheme://host[:port] only"


class UnservableBackend(ValueError):
    """A group's backends nginx here cannot take; the message says why.

    Attributes:
        field: where in the group, e.g. `backends[0].url`.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class Upstream:
    """A group as an nginx upstream: the scheme `proxy_pass` uses and its servers.

    Attributes:
        scheme: `http` or `https`.
        servers: (`host:port`, weight) of each backend, weight 0 counted as 1.
    """

    scheme: str
    servers: tuple[tuple[str, int], ...]


def _host_problem(host: str) -> str | None:
    if ":" in host:  # only a bracketed IPv6 address has one (`hostname` drops the brackets)
        if "%" in host:
            return "has an IPv6 zone (%...): nginx here takes an IPv6 address without one"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"has the host {host!r}, not an IPv6 address"
        return None
    if not host.isascii():
        try:
            written = host.encode("idna").decode()
        except UnicodeError:
            return "has a host that is not ASCII: nginx here resolves a host name as written"
        return (
            "has a host that is not ASCII: nginx here resolves a host name as written; "
            f"write it as {written!r}"
        )
    if host == "unix":
        return "has the host 'unix', which nginx reads as a UNIX socket path (unix:)"
    if len(host) > 253 or not _HOST_NAME.match(host):
        return (
            f"has the host {host!r}, not a host name or IP address: use letters, digits, '-' "
            "and '_' between dots"
        )
    return None


def _servable(url: str) -> tuple[str, str] | str:
    """(scheme, `host:port`) of a backend URL, or why nginx here cannot take it."""
    if _REFERENCE.search(url):
        return (
            "has a ${...} reference: nothing fills one in for a route, and nginx here takes "
            "the URL as written"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"is not scheme://host[:port] ({error})"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if "@" in parts.netloc:
        return f"has credentials (user:password@): nginx here does not send them; {_ONLY}"
    if not host:
        return "has no host"
    if problem := _host_problem(host):
        return problem
    if parts.path not in ("", "/"):
        return (
            f"has a path ({parts.path}): nginx here sends every group the client's own path; "
            + _ONLY
        )
    if parts.query:
        return f"has a query: nginx here sends every group the client's own query; {_ONLY}"
    if parts.fragment:
        return f"has a fragment; {_ONLY}"
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_problem(url: str) -> str | None:
    """Why nginx here cannot take the backend `url` (a sentence to follow the URL), or None."""
    found = _servable(url)
    return found if isinstance(found, str) else None


def server(url: str) -> tuple[str, str]:
    """(scheme, `host:port` as nginx's `server` takes it) of a backend URL.

    Raises:
        UnservableBackend: nginx here cannot take it (the message is to follow the URL).
    """
    found = _servable(url)
    if isinstance(found, str):
        raise UnservableBackend("url", found)
    return found


def group_problems(group: TrafficGroup) -> Iterator[tuple[str, str]]:
    """(field, reason) of everything in `group` nginx here cannot take as an upstream; the
    reason of a backend names its URL."""
    schemes = set()
    for index, backend in enumerate(group.backends):
        if problem := server_problem(backend.url):
            yield f"backends[{index}].url", f"{backend.url!r} {problem}"
        else:
            schemes.add(urlsplit(backend.url).scheme)
    if len(schemes) > 1:
        yield "backends", "mixes http and https: nginx here proxies a group over one scheme"


def upstream(group: TrafficGroup) -> Upstream:
    """The upstream of a traffic group.

    Raises:
        UnservableBackend: the first thing in the group nginx here cannot take.
    """
    first = next(group_problems(group), None)
    if first is not None:
        raise UnservableBackend(*first)
    servers = [(server(backend.url), max(backend.weight, 1)) for backend in group.backends]
    return Upstream(servers[0][0][0], tuple((address, w) for (_, address), w in servers))
