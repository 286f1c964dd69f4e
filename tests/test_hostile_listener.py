"""The listener of a real `reconcile serve` against slow and oversized requests (slow tier):
request heads that never end or never finish, bodies trickled after the answer, idle sockets,
and more connections than the cap."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import ServerProcess, running_server
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 6
# Generous: the machine is shared; a timer of 1-2 s firing within this is on time.
DEADLINE = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("listener")
    repo = ConfigRepo(root / "config")
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.commit("initial")
    env = {
        "RECONCILER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "RECONCILER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "RECONCILER_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "RECONCILER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running_server(repo.path, root / "state.duckdb", env) as running:
        running.wait_ready()
        yield running


@contextlib.contextmanager
def connection(server: ServerProcess) -> Iterator[socket.socket]:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=DEADLINE) as sock:
        yield sock


def cut(server: ServerProcess, reason: str) -> float:
    """How many requests `/metrics` says the listener cut off for `reason`."""
    prefix = f'reconciler_http_requests_cut_total{{reason="{reason}"}} '
    lines = server.client.get("/metrics").text.splitlines()
    return sum(float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix))


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or DEADLINE passes)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_an_idle_connection_and_an_unfinished_head_get_408_and_are_closed(
    server: ServerProcess,
) -> None:
    before = cut(server, "header_timeout")
    for opening in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "):
        with connection(server) as sock:
            started = time.monotonic()
            sock.sendall(opening)
            received = answer(sock)
            assert received.startswith(b"HTTP/1.1 408 "), received
            assert b"RECONCILER_HEADER_TIMEOUT" in received
            assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - started < DEADLINE
    assert cut(server, "header_timeout") == before + 2, "each one counted"


def test_a_second_request_on_a_kept_alive_connection_has_its_own_head_deadline(
    server: ServerProcess,
) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {first!r}"
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 "), first
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        received = answer(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_a_head_that_never_ends_is_431_once_over_the_limit(server: ServerProcess) -> None:
    sent = 0
    before = cut(server, "header_too_large")
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 50 * 1024 * 1024:
                sock.sendall(b"a" * 4096)
                sent += 4096
        received = answer(sock)
    assert sent < 50 * 1024 * 1024, "the server kept reading"
    assert cut(server, "header_too_large") == before + 1
    if received:  # a reset may beat the answer to the client
        assert received.startswith(b"HTTP/1.1 431 "), received
        assert b"RECONCILER_MAX_HEADER_BYTES" in received


def test_a_body_trickled_after_the_answer_is_cut_off(server: ServerProcess) -> None:
    before = cut(server, "body_timeout")
    with connection(server) as sock:
        started = time.monotonic()
        # Refused at once (no token); then one byte at a time of a large body.
        sock.sendall(
            b"POST /canary/nowhere/start HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.settimeout(0.2)
        received = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - started < DEADLINE:
                sock.sendall(b"x")
                with contextlib.suppress(TimeoutError):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 401 "), received
    assert elapsed < DEADLINE, "the connection was held as long as the client wanted"
    assert cut(server, "body_timeout") == before + 1


def test_connections_over_the_cap_are_503_and_the_cap_frees_up(server: ServerProcess) -> None:
    parts = urlsplit(server.url)
    before = cut(server, "connection_limit")
    idle = [
        socket.create_connection((parts.hostname, parts.port), timeout=DEADLINE)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        with connection(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer(sock).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: cut(server, "connection_limit") >= before + 1, DEADLINE, "the 503 counted")

    # The closed ones are forgotten: the server answers again.
    def answers() -> bool:
        with connection(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return answer(sock).startswith(b"HTTP/1.1 200 ")

    wait_for(answers, DEADLINE, "the server to answer once the idle connections closed")
