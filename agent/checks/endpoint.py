"""Network endpoints: parsing `host:port` (IPv6 in brackets) and explaining connect errors."""

from __future__ import annotations

import os
import socket


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Split `host:port` or `[v6-address]:port` into host and port.

    Args:
        endpoint: The check's endpoint.

    Returns:
        The host (without brackets) and the port.

    Raises:
        ValueError: the endpoint is not host:port with a port in 1..65535.
    """
    host, separator, port = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def connect_error(endpoint: str, error: OSError) -> str:
    """Why a connection to `endpoint` failed, as a sentence (`... Connection refused`).

    Args:
        endpoint: The endpoint as the check names it.
        error: What the connect raised.
    """
    if isinstance(error, socket.gaierror):
        reason = f"cannot resolve the host ({error.strerror})"
    elif error.errno:
        reason = os.strerror(error.errno)
    else:
        reason = str(error) or type(error).__name__
    return f"cannot connect to {endpoint}: {reason}"
