"""grpc checks against a real gRPC server on 127.0.0.1: SERVING passes, anything else fails
with the status, metadata reaches the server, and TLS verifies against a given CA."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.checks import CheckOutcome, ClientPool, run_check
from agent.checks.series import CheckSeries
from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config
from tests.agentproc import AgentProcess
from tests.conftest import ConfigRepo, agent_doc, region_doc
from tests.server import running_server, wait_for
from tests.test_checks_icmp import _can_ping

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "Bearer let-me-in"


class RequireToken(grpc.ServerInterceptor):
    """Refuses calls to the `guarded` service that lack the token in their metadata."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        metadata = dict(details.invocation_metadata or ())
        if metadata.get("authorization") == SECRET or metadata.get("x-zone") != "guarded":
            return continuation(details)

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")

        return grpc.unary_unary_rpc_method_handler(deny)


def _server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[RequireToken()])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("orders", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("billing", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.fixture(scope="module")
def plaintext() -> Iterator[str]:
    server, port = _server()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=3))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def with_tls() -> Iterator[tuple[str, str]]:
    cert, key = _certificate()
    server, port = _server(grpc.ssl_server_credentials([(key, cert)]))
    yield f"127.0.0.1:{port}", cert.decode()
    server.stop(None)


def grpc_check(endpoint: str, **fields: Any) -> dict[str, Any]:
    return {"name": "health", "type": "grpc", "timeout_ms": 3000, "endpoint": endpoint, **fields}


def _run(check: dict[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def test_a_serving_server_passes(plaintext: str) -> None:
    outcome = _run(grpc_check(plaintext))
    assert (outcome.status, outcome.message, outcome.code) == ("pass", "the server is SERVING", 0)
    assert outcome.phases is not None and outcome.phases["total_ms"] > 0


def test_a_serving_service_passes_and_a_not_serving_one_fails(plaintext: str) -> None:
    assert _run(grpc_check(plaintext, service="orders")).status == "pass"
    outcome = _run(grpc_check(plaintext, service="billing"))
    assert (outcome.status, outcome.message) == ("fail", "service 'billing' is NOT_SERVING")


def test_an_unknown_service_fails_with_the_grpc_status(plaintext: str) -> None:
    outcome = _run(grpc_check(plaintext, service="nope"))
    assert outcome.status == "fail"
    assert outcome.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert (outcome.message or "").startswith(
        f"grpc.health.v1.Health/Check on {plaintext}: NOT_FOUND"
    )


def test_metadata_reaches_the_server(plaintext: str) -> None:
    zone = {"name": "x-zone", "value": "guarded"}
    denied = _run(grpc_check(plaintext, metadata=[zone]))
    assert denied.status == "fail"
    assert (
        denied.message == f"grpc.health.v1.Health/Check on {plaintext}: UNAUTHENTICATED (no token)"
    )
    allowed = _run(
        grpc_check(plaintext, metadata=[zone, {"name": "authorization", "value": SECRET}])
    )
    assert allowed.status == "pass", allowed.message


def test_a_closed_port_fails_as_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = _run(grpc_check(f"127.0.0.1:{port}", timeout_ms=1000))
    assert outcome.status == "fail"
    assert (outcome.message or "").startswith(
        f"grpc.health.v1.Health/Check on 127.0.0.1:{port}: UNAVAILABLE"
    )


def test_tls_passes_with_the_servers_ca_and_fails_without_it(with_tls: tuple[str, str]) -> None:
    endpoint, ca = with_tls
    outcome = _run(grpc_check(endpoint, tlsConfig={"ca": ca}))
    assert outcome.status == "pass", outcome.message
    untrusted = _run(grpc_check(endpoint, tls=True, timeout_ms=1000))
    assert untrusted.status == "fail"
    assert "UNAVAILABLE" in (untrusted.message or "")
    plaintext = _run(grpc_check(endpoint, timeout_ms=1000))
    assert plaintext.status == "fail"


def test_the_agent_exposes_the_blackbox_exporters_grpc_series(plaintext: str) -> None:
    series = CheckSeries()
    series.record("api@eu-1", "health", "grpc", _run(grpc_check(plaintext, service="billing")))
    text = series.render()
    labels = 'canary="api@eu-1",check="health"'
    assert f"probe_grpc_status_code{{{labels}}} 0\n" in text
    assert f'probe_grpc_healthcheck_response{{{labels},serving_status="NOT_SERVING"}} 1\n' in text
    assert f'probe_grpc_healthcheck_response{{{labels},serving_status="SERVING"}} 0\n' in text
    assert f"probe_success{{{labels}}} 0\n" in text


def test_a_cel_test_and_display_see_the_status(plaintext: str) -> None:
    ok = _run(
        grpc_check(
            plaintext,
            service="billing",
            test={"expr": "status == 'NOT_SERVING' && elapsed < Duration('5s')"},
            display={"expr": "'billing is ' + status"},
        )
    )
    # The health answer itself still decides: NOT_SERVING fails, the display is the message.
    assert (ok.status, ok.message) == (
        "fail",
        "service 'billing' is NOT_SERVING (billing is NOT_SERVING)",
    )
    serving = _run(grpc_check(plaintext, service="orders", test={"expr": "status == 'DRAINING'"}))
    assert (serving.status, serving.message) == ("fail", "test \"status == 'DRAINING'\" is false")


def test_an_expression_over_an_unknown_variable_is_refused_at_load() -> None:
    text = (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: g\nspec:\n"
        "  grpc:\n    - name: h\n      endpoint: 127.0.0.1:1\n      test:\n"
        "        expr: json.ok\n"
    )
    result = load_config([SourceFile("c.yaml", "sha-g", text.encode)])
    errors = [d.format() for d in result.diagnostics if d.severity == "error"]
    assert len(errors) == 1 and "spec.grpc[0].test.expr" in errors[0], errors
    assert "undeclared reference to 'json'" in errors[0]


def test_a_server_that_never_answers_is_a_timeout_error() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        outcome = _run(grpc_check(f"127.0.0.1:{port}", timeout_ms=300))
    assert outcome.status == "error"
    assert outcome.message == (
        f"timed out after 300ms (grpc.health.v1.Health/Check on 127.0.0.1:{port}: "
        "DEADLINE_EXCEEDED)"
    )


class _PeerRecorder(health.HealthServicer):
    """Answers SERVING and remembers from which client address each call came."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[str] = []

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.peers.append(context.peer())
        return super().Check(request, context)


def _recording_server(port: int = 0) -> tuple[grpc.Server, int, _PeerRecorder]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _PeerRecorder()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound, servicer


def test_runs_share_a_connection_and_see_a_restarted_server_at_once() -> None:
    async def main() -> list[CheckOutcome]:
        server, port, servicer = _recording_server()
        outcomes = []
        async with ClientPool(size=1, trust_env=False) as pool:
            check = grpc_check(f"127.0.0.1:{port}", timeout_ms=2000)
            for _ in range(3):
                outcomes.append(await run_check(check, pool, lambda: NOW))
            assert len(set(servicer.peers)) == 1, servicer.peers  # one connection, kept
            server.stop(None).wait()
            outcomes.append(await run_check(check, pool, lambda: NOW))
            again, _, _ = _recording_server(port)
            try:
                outcomes.append(await run_check(check, pool, lambda: NOW))
            finally:
                again.stop(None)
        return outcomes

    *served, down, back = asyncio.run(main())
    assert [o.status for o in served] == ["pass"] * 3
    assert down.status == "fail" and "UNAVAILABLE" in (down.message or "")
    assert back.status == "pass", back.message


@pytest.mark.slow
def test_a_real_agent_reports_grpc_and_ping_results_and_series(
    config_repo: ConfigRepo, tmp_path: Path, plaintext: str
) -> None:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write(
        "canaries/api.yaml",
        f"""
        apiVersion: canary-reconciler/v1
        kind: Canary
        metadata:
          name: api
        spec:
          schedule: '@every 500ms'
          agentSelector: ['eu-1']
          grpc:
            - name: orders
              endpoint: {plaintext}
              service: orders
          icmp:
            - name: loopback
              endpoint: 127.0.0.1
              packetCount: 1
        """,
    )
    config_repo.commit("grpc and ping")
    with running_server(config_repo.path, tmp_path / "state.duckdb") as server:
        server.wait_ready()
        agent = AgentProcess(server.url, server.token("eu-1"), tmp_path / "spool.sqlite")
        labels = 'canary="default/api@eu-1",check="orders"'
        serving = f'probe_grpc_healthcheck_response{{{labels},serving_status="SERVING"}} 1'
        try:
            wait_for(lambda: serving in agent.status.get("/metrics").text, 15, "grpc series")
            wait_for(lambda: agent.metric("rows_shipped_total") >= 4, 15, "rows shipped")
            metrics = agent.status.get("/metrics").text
        finally:
            assert agent.stop() == 0
    assert f"probe_success{{{labels}}} 1" in metrics
    with duckdb.connect(str(tmp_path / "state.duckdb"), read_only=True) as connection:
        rows = connection.execute(
            "SELECT check_type, status, code, phases FROM results ORDER BY started_at"
        ).fetchall()
    grpc_rows = [r for r in rows if r[0] == "grpc"]
    assert grpc_rows and {(r[1], r[2]) for r in grpc_rows} == {("pass", 0)}
    ping_rows = [r for r in rows if r[0] == "icmp"]
    assert ping_rows
    if _can_ping():
        assert '"packets_received":1' in str(ping_rows[-1][3]).replace(" ", "")
