"""Loopback stand-ins for the sample's TCP, TLS and DNS targets.

- `TcpListener` accepts connections and closes them: all a TCP check needs to pass.
- `TlsListener` completes TLS handshakes with a self-signed certificate made at start for the
  sample's names (valid 90 days, so `maxSSLExpiry` checks pass; the TLS check reads the
  certificate and does not verify its chain).
- `DnsResponder` answers UDP queries from a small zone the demo fills from the sample's DNS
  checks; anything else gets NXDOMAIN.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERTIFICATE_DAYS = 90


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up early is not worth a traceback in the demo's output


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _Running:
    """A socketserver served from a daemon thread until `close()`."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self._server = server
        address = server.server_address
        assert isinstance(address, tuple)
        self.port = int(address[1])
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class TcpListener(_Running):
    """Accepts TCP connections on 127.0.0.1 and closes them at once."""

    def __init__(self, name: str) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                pass

        super().__init__(_TcpServer(("127.0.0.1", 0), Handler), f"demo-tcp-{name}")


def write_self_signed(names: list[str], directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `names` and its key, as PEM files in `directory`.

    Returns:
        (certificate path, key path).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "demo-tls.crt", directory / "demo-tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsListener(_Running):
    """Completes a TLS handshake with a self-signed certificate, then closes."""

    def __init__(self, names: list[str], directory: Path) -> None:
        self.names = names
        cert_path, key_path = write_self_signed(names, directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                raw: socket.socket = self.request
                raw.settimeout(5)
                try:
                    with context.wrap_socket(raw, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass  # a client that hangs up mid-handshake is not our problem

        super().__init__(_TcpServer(("127.0.0.1", 0), Handler), "demo-tls")


class DnsResponder(_Running):
    """An authoritative-style UDP responder for the records added with `add`."""

    def __init__(self) -> None:
        self._zone: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], list[str]] = {}
        zone = self._zone

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                try:
                    query = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    return
                response = dns.message.make_response(query)
                response.flags |= dns.flags.AA
                for question in query.question:
                    records = zone.get((question.name, question.rdtype))
                    if records:
                        response.answer.append(
                            dns.rrset.from_text_list(
                                question.name,
                                60,
                                "IN",
                                question.rdtype,
                                records,
                                origin=dns.name.root,
                                relativize=False,
                            )
                        )
                    elif not any(name == question.name for name, _ in zone):
                        response.set_rcode(dns.rcode.NXDOMAIN)
                sock.sendto(response.to_wire(), self.client_address)

        super().__init__(_UdpServer(("127.0.0.1", 0), Handler), "demo-dns")

    def add(self, name: str, rdtype: str, records: list[str]) -> None:
        """Answer `name` `rdtype` queries with `records` (zone-file text such as `10 mx1`;
        names in them are taken as absolute)."""
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        self._zone[key] = list(records)
