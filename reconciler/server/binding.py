"""Whether a listener's address can be bound, asked before the listener would find out too
late (uvicorn once the state is open and the config applied; the demo's children at start)."""

from __future__ import annotations

import socket


def bind_problem(host: str, port: int) -> OSError | None:
    """Why `host`:`port` cannot be bound now (a port another process holds, an address not
    this machine's, a name that does not resolve), or None. Each address the name resolves
    to is tried, with `SO_REUSEADDR` as servers bind: a port left in TIME_WAIT is free."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return error
    for family, kind, protocol, _, address in found:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                return error
    return None
