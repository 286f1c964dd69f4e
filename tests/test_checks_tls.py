"""TLS checks and HTTPS phases against local TLS servers with a self-signed certificate."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.checks import CheckOutcome, ClientPool, result_row, run_check, tls_check

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    pem: str
    not_after: datetime


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, valid for three more days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC).replace(microsecond=0)
    not_after = now + timedelta(days=3)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(directory / "cert.pem", directory / "key.pem", pem.decode(), not_after)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    return context


async def answer_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:  # a TLS check hangs up after the handshake
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def run_against(
    handler: Handler,
    check: dict[str, Any],
    tls: ssl.SSLContext | None = None,
    verify: ssl.SSLContext | bool = True,
    now: datetime | None = None,
) -> CheckOutcome:
    """Start a server on 127.0.0.1, fill `{port}` into the check's fields, run the check."""

    async def main() -> CheckOutcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        filled = {k: v.format(port=port) if isinstance(v, str) else v for k, v in check.items()}
        try:
            async with ClientPool(size=1, verify=verify, trust_env=False) as pool:
                return await run_check(filled, pool, lambda: now or datetime.now(UTC))
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def tls(**fields: Any) -> dict[str, Any]:
    return {"name": "cert", "type": "tls", "timeout_ms": 5000, "endpoint": "127.0.0.1:{port}"} | (
        fields
    )


def test_a_certificate_with_enough_days_left_passes(certificate: Certificate) -> None:
    outcome = run_against(answer_http, tls(maxSSLExpiry=1), server_context(certificate))
    assert outcome.status == "pass"
    assert outcome.message is not None
    when = certificate.not_after.strftime("%Y-%m-%d %H:%M:%SZ")
    assert outcome.message.startswith(f"certificate expires on {when} (")
    assert outcome.message.endswith(" days left)")
    assert outcome.phases is not None
    assert 2.9 < outcome.phases["cert_days_left"] <= 3
    assert {"connect_ms", "tls_ms", "total_ms"} <= set(outcome.phases)
    # The expiry itself reaches the control plane (its probe_ssl_earliest_cert_expiry series).
    row = result_row("default/t@eu-1", "tls", outcome)
    assert row.phases is not None and row.phases.cert_not_after is not None
    assert abs(row.phases.cert_not_after - certificate.not_after.timestamp()) < 1


def test_a_certificate_expiring_too_soon_fails(certificate: Certificate) -> None:
    outcome = run_against(answer_http, tls(maxSSLExpiry=7), server_context(certificate))
    assert outcome.status == "fail"
    assert outcome.message is not None
    when = certificate.not_after.strftime("%Y-%m-%d %H:%M:%SZ")
    assert outcome.message.startswith(f"certificate expires on {when} (")
    assert outcome.message.endswith(" days left), fewer than maxSSLExpiry 7")


def test_an_expired_certificate_fails(certificate: Certificate) -> None:
    later = certificate.not_after + timedelta(days=2)
    outcome = run_against(answer_http, tls(maxSSLExpiry=0), server_context(certificate), now=later)
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert "certificate expired on" in outcome.message
    assert "(2.0 days ago)" in outcome.message


def test_the_server_name_is_sent_as_sni(certificate: Certificate) -> None:
    seen: list[str | None] = []

    def remember(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        seen.append(name)

    context = server_context(certificate)
    context.sni_callback = remember
    outcome = run_against(answer_http, tls(serverName="canary.example", maxSSLExpiry=1), context)
    assert outcome.status == "pass"
    assert seen == ["canary.example"]


@pytest.mark.parametrize("handler", [answer_garbage, hang_up])
def test_a_failed_handshake_is_an_error(handler: Handler) -> None:
    outcome = run_against(handler, tls())
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("HandshakeError: TLS handshake with 127.0.0.1:")


def test_a_closed_port_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = run_against(answer_http, tls(endpoint=f"127.0.0.1:{port}"))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")


def test_https_records_tls_phase_and_certificate_days(certificate: Certificate) -> None:
    trust = ssl.create_default_context(cadata=certificate.pem)
    check = {"name": "web", "type": "http", "timeout_ms": 5000, "url": "https://127.0.0.1:{port}/"}
    outcome = run_against(answer_http, check, server_context(certificate), verify=trust)
    assert (outcome.status, outcome.code) == ("pass", 200)
    assert outcome.phases is not None
    assert {"connect_ms", "tls_ms", "first_byte_ms", "total_ms"} <= set(outcome.phases)
    assert 2.9 < outcome.phases["cert_days_left"] <= 3
    assert outcome.message is not None
    assert outcome.message.endswith(" days left)")


def test_https_with_an_untrusted_certificate_is_an_error(certificate: Certificate) -> None:
    check = {"name": "web", "type": "http", "timeout_ms": 5000, "url": "https://127.0.0.1:{port}/"}
    outcome = run_against(answer_http, check, server_context(certificate))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"maxSSLExpiry": 2}, "pass"),
        ({"maxSSLExpiry": 7}, "fail"),
        ({"test": {"expr": "sslAge > Duration('2d') && sslAge <= Duration('3d')"}}, "pass"),
        ({"test": {"expr": "sslAge > Duration('7d')"}}, "fail"),
    ],
)
def test_https_certificate_expiry_as_canary_checker_checks_it(
    certificate: Certificate, fields: dict[str, Any], status: str
) -> None:
    """canary-checker's http `maxSSLExpiry` (days) and CEL `sslAge` (time left)."""
    trust = ssl.create_default_context(cadata=certificate.pem)
    check = {"name": "web", "type": "http", "timeout_ms": 5000, "url": "https://127.0.0.1:{port}/"}
    outcome = run_against(answer_http, check | fields, server_context(certificate), verify=trust)
    assert outcome.status == status, outcome.message
    if "maxSSLExpiry" in fields and status == "fail":
        assert outcome.message is not None and "fewer than maxSSLExpiry 7" in outcome.message


@pytest.mark.parametrize(
    ("tls_config", "status"),
    [
        ({"insecureSkipVerify": True}, "pass"),
        ({"insecureSkipVerify": False}, "error"),
        ({"ca": "PEM"}, "pass"),
    ],
)
def test_https_with_canary_checkers_tls_config(
    certificate: Certificate, tls_config: dict[str, Any], status: str
) -> None:
    """tlsConfig as served: skip verification, or trust a CA given as PEM."""
    if tls_config.get("ca") == "PEM":
        tls_config = {"ca": certificate.pem}
    check = {"name": "web", "type": "http", "timeout_ms": 5000, "url": "https://127.0.0.1:{port}/"}
    outcome = run_against(
        answer_http, check | {"tlsConfig": tls_config}, server_context(certificate)
    )
    assert outcome.status == status, outcome.message
    if status == "pass":
        assert outcome.phases is not None and 2.9 < outcome.phases["cert_days_left"] <= 3


def test_a_certificate_not_valid_yet_fails_with_its_start_date(certificate: Certificate) -> None:
    starts = certificate.not_after - timedelta(days=3, hours=1)  # the fixture's notBefore
    earlier = starts - timedelta(days=2)
    outcome = run_against(
        answer_http, tls(maxSSLExpiry=1), server_context(certificate), now=earlier
    )
    assert outcome.status == "fail"
    when = starts.strftime("%Y-%m-%d %H:%M:%SZ")
    assert outcome.message == f"certificate is not yet valid: valid from {when} (2.0 days from now)"


def test_the_tls_context_loads_no_ca_store() -> None:
    """Nothing is verified, and loading the system's CAs cost the first run ~20 ms."""
    assert tls_check._context().cert_store_stats()["x509"] == 0


@contextmanager
def blocking_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection server in a thread, with blocking sockets: `serve` gets the accepted
    connection. Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # a check that never connects does not leave the thread behind

    def accept() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            serve(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def run_on(loop: str, check: dict[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            return await run_check(check, pool, lambda: datetime.now(UTC))

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(main())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_reset_during_the_handshake_is_reported_at_once(loop: str) -> None:
    """The close that followed a failed handshake was awaited, and never ended: the row was a
    timeout and the reset was lost."""

    def reset(conn: socket.socket) -> None:
        conn.recv(4096)  # the ClientHello
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with blocking_server(reset) as port:
        outcome = run_on(loop, tls(endpoint=f"127.0.0.1:{port}", timeout_ms=3000))
    assert outcome.status == "error"
    assert outcome.message == (
        f"HandshakeError: TLS handshake with 127.0.0.1:{port} failed: "
        "[Errno 104] Connection reset by peer"
    )
    assert outcome.duration_ms < 1000


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_server_that_never_answers_the_close_does_not_hold_the_check(
    loop: str, certificate: Certificate
) -> None:
    """The certificate was read, and the run was a timeout waiting for the server's
    close_notify."""
    done = threading.Event()

    def handshake_then_nothing(conn: socket.socket) -> None:
        with server_context(certificate).wrap_socket(conn, server_side=True):
            done.wait(10)  # holds the connection open, never reading: ends with the test

    with blocking_server(handshake_then_nothing) as port:
        try:
            outcome = run_on(loop, tls(endpoint=f"127.0.0.1:{port}", maxSSLExpiry=1))
        finally:
            done.set()
    assert outcome.status == "pass", outcome.message
    assert outcome.duration_ms < 1000
    assert outcome.phases is not None and outcome.phases["total_ms"] < 1000
