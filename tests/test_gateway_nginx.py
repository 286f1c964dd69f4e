"""The nginx data plane against a real nginx and real backends, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.metrics import Metrics
from reconciler.gateway import GatewayError, GroupMetrics, NginxGateway
from reconciler.gateway.accesslog import aggregate, parse_line
from reconciler.gateway.processes import exited
from reconciler.server.controllers.gateway_watch import GatewayWatch
from reconciler.server.supervise import Supervisor
from schemas.route import RouteSpec
from tests.waiting import eventually, wait_for

ROUTE = "shop/checkout"
NGINX = shutil.which("nginx")
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx; `make test` does it)"
)


class Backend(ThreadingHTTPServer):
    """A backend answering its name, or 500 when failing, after an optional delay."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.status = 200
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if self.server.delay:
            time.sleep(self.server.delay)  # the backend's latency, not test timing
        body = self.server.name.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


Backends = dict[str, Backend]


@pytest.fixture
def backends() -> Iterator[Backends]:
    servers = {name: Backend(name) for name in ("stable", "canary")}
    threads = [
        threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
        for s in servers.values()
    ]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[NginxGateway]:
    gw = NginxGateway(tmp_path / "gw", ("127.0.0.1", free_port()), worker_processes=1)
    gw.start()
    yield gw
    gw.stop()
    assert not gw.running


def spec(backends: Backends, *, canary_url: str | None = None) -> RouteSpec:
    return RouteSpec.model_validate(
        {
            "path": "/checkout",
            "path_prefix": True,
            "traffic_split": [
                {"name": "stable", "weight": 100, "backends": [{"url": backends["stable"].url}]},
                {
                    "name": "canary",
                    "weight": 0,
                    "backends": [{"url": canary_url or backends["canary"].url}],
                },
            ],
        }
    )


def get(gw: NginxGateway, path: str = "/checkout/cart") -> tuple[int, str, str | None]:
    """(status, body, X-Gateway-Generation) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", gw_port(gw), timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), response.getheader("X-Gateway-Generation")
    finally:
        connection.close()


def gw_port(gw: NginxGateway) -> int:
    return gw.listen[1]


def applied(gw: NginxGateway, route_spec: RouteSpec, weights: dict[str, int]) -> None:
    """Apply and wait until only the new generation serves."""
    gw.apply(ROUTE, route_spec, weights)
    assert gw.wait_reloaded(timeout=10)
    assert get(gw)[2] == str(gw.generation(ROUTE))


def bodies(gw: NginxGateway, count: int, path: str = "/checkout/cart") -> Counter[str]:
    return Counter(get(gw, path)[1] for _ in range(count))


def later_than_now() -> datetime:
    """A time strictly after every response logged so far, at the log's millisecond grain."""
    now_ms = int(time.time() * 1000)
    wait_for(lambda: int(time.time() * 1000) > now_ms)
    return datetime.now(UTC)


@pytest.mark.slow
@needs_nginx
def test_100_0_sends_everything_to_stable(gateway: NginxGateway, backends: Backends) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    assert bodies(gateway, 50) == {"stable": 50}
    assert get(gateway, "/checkout")[1] == "stable"
    assert get(gateway, "/checkoutx")[0] == 404
    assert get(gateway, "/elsewhere")[0] == 404


@pytest.mark.slow
@needs_nginx
def test_50_50_lands_in_a_loose_band(gateway: NginxGateway, backends: Backends) -> None:
    applied(gateway, spec(backends), {"stable": 50, "canary": 50})
    counts = bodies(gateway, 400)
    assert set(counts) == {"stable", "canary"}
    assert 120 <= counts["canary"] <= 280, counts


@pytest.mark.slow
@needs_nginx
def test_0_100_sends_everything_to_canary(gateway: NginxGateway, backends: Backends) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    applied(gateway, spec(backends), {"stable": 0, "canary": 100})
    assert bodies(gateway, 50) == {"canary": 50}


@pytest.mark.slow
@needs_nginx
def test_weights_read_back_also_from_a_new_adapter(
    gateway: NginxGateway, backends: Backends, tmp_path: Path
) -> None:
    assert gateway.weights(ROUTE) is None
    applied(gateway, spec(backends), {"stable": 90, "canary": 10})
    applied(gateway, spec(backends), {"stable": 75, "canary": 25})
    assert gateway.weights(ROUTE) == {"stable": 75, "canary": 25}

    again = NginxGateway(tmp_path / "gw", ("127.0.0.1", gw_port(gateway)), worker_processes=1)
    assert again.weights(ROUTE) == {"stable": 75, "canary": 25}
    again.start()  # adopts the running master: a second one could not bind the port
    assert again.running
    assert get(gateway)[0] == 200


@pytest.mark.slow
@needs_nginx
def test_rejected_config_keeps_the_previous_one_serving(
    gateway: NginxGateway, backends: Backends
) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    (conf,) = (gateway.directory / "routes").glob("*.conf")
    before = conf.read_text()

    with pytest.raises(GatewayError, match="invalid port in upstream") as raised:
        gateway.apply(ROUTE, spec(backends, canary_url="http://127.0.0.1:0"), {"canary": 100})
    assert "previous config keeps serving" in str(raised.value)

    assert conf.read_text() == before
    assert gateway.weights(ROUTE) == {"stable": 100, "canary": 0}
    assert bodies(gateway, 20) == {"stable": 20}
    # Still healthy: the next good config goes through.
    applied(gateway, spec(backends), {"stable": 0, "canary": 100})
    assert bodies(gateway, 5) == {"canary": 5}


@pytest.mark.slow
@needs_nginx
def test_a_backend_with_a_path_is_refused_when_synced(
    gateway: NginxGateway, backends: Backends
) -> None:
    """docs/yaml-reference.md: `validate` takes a backend with a path (other gateways honour
    it), nginx here does not: it sends each group the client's own path."""
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    with_path = spec(backends, canary_url=f"{backends['canary'].url}/v2")
    with pytest.raises(GatewayError, match="a backend is scheme://host\\[:port\\] only"):
        gateway.apply(ROUTE, with_path, {"canary": 100})
    assert gateway.weights(ROUTE) == {"stable": 100, "canary": 0}
    assert bodies(gateway, 10) == {"stable": 10}


@pytest.mark.slow
@needs_nginx
def test_groups_named_like_map_parameters_each_get_their_traffic(gateway: NginxGateway) -> None:
    """In a `map` nginx reads default, hostnames, include and volatile as its own parameters
    (`include` as a file to open): every group must still be a key reached by its name."""
    names = ["include", "default", "hostnames", "volatile", "canary"]
    servers = {name: Backend(name) for name in names}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        route_spec = RouteSpec.model_validate(
            {
                "path": "/checkout",
                "path_prefix": True,
                "traffic_split": [
                    {"name": name, "weight": 100 if name == "include" else 0,
                     "backends": [{"url": server.url}]}
                    for name, server in servers.items()
                ],
            }
        )  # fmt: skip
        for name in names:
            applied(gateway, route_spec, {other: 100 if other == name else 0 for other in names})
            assert bodies(gateway, 10) == {name: 10}
        applied(gateway, route_spec, dict.fromkeys(names, 20))
        assert set(bodies(gateway, 200)) == set(names)
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


@pytest.mark.slow
@needs_nginx
def test_metrics_per_group_since_a_time(gateway: NginxGateway, backends: Backends) -> None:
    backends["canary"].status = 500
    backends["canary"].delay = 0.02
    applied(gateway, spec(backends), {"stable": 50, "canary": 50})
    start = later_than_now()
    counts = bodies(gateway, 80)

    def settled() -> dict[str, GroupMetrics]:
        result: dict[str, GroupMetrics] = {}

        def complete() -> bool:
            result.update(gateway.metrics(ROUTE, start))
            return sum(m.requests for m in result.values()) == 80

        wait_for(complete)
        return result

    metrics = settled()
    assert metrics["stable"].requests == counts["stable"]
    assert metrics["canary"].requests == counts["canary"]
    assert metrics["stable"].errors == 0
    assert metrics["canary"].errors == counts["canary"]
    assert metrics["canary"].p99_ms is not None and metrics["canary"].p99_ms >= 20
    assert metrics["canary"].error_rate == 1.0

    step = later_than_now()
    after = gateway.metrics(ROUTE, step)
    assert after == {"stable": GroupMetrics(), "canary": GroupMetrics()}
    get(gateway)
    wait_for(lambda: sum(m.requests for m in gateway.metrics(ROUTE, step).values()) == 1)
    assert sum(m.requests for m in gateway.metrics(ROUTE, start).values()) == 81


@pytest.mark.slow
@needs_nginx
def test_metrics_follow_log_truncation_and_rotation(
    gateway: NginxGateway, backends: Backends, tmp_path: Path
) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    start = later_than_now()

    def wait_total(total: int) -> None:
        wait_for(lambda: gateway.metrics(ROUTE, start)["stable"].requests == total)

    bodies(gateway, 20)
    wait_total(20)
    log = tmp_path / "gw" / "logs" / "access.json"
    os.truncate(log, 0)
    bodies(gateway, 5)
    wait_total(25)
    log.rename(log.with_name("access.json.1"))
    gateway.reopen_logs()
    bodies(gateway, 7)
    wait_for(log.exists)
    bodies(gateway, 3)
    wait_total(35)


@pytest.mark.slow
@needs_nginx
def test_remove_stops_serving_the_route(gateway: NginxGateway, backends: Backends) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    later = NginxGateway(gateway.directory, gateway.listen)  # a restarted server's adapter
    assert gateway.routes() == later.routes() == [ROUTE]
    gateway.remove(ROUTE)
    assert later.routes() == []
    assert gateway.wait_reloaded(timeout=10)
    assert gateway.weights(ROUTE) is None
    assert get(gateway)[0] == 404


@pytest.mark.slow
@needs_nginx
def test_a_taken_port_is_reported(gateway: NginxGateway, tmp_path: Path) -> None:
    other = NginxGateway(tmp_path / "other", gateway.listen, worker_processes=1)
    with pytest.raises(GatewayError, match="did not start.*Address already in use"):
        other.start()
    assert not other.running


def test_missing_nginx_says_how_to_install_it(tmp_path: Path) -> None:
    gw = NginxGateway(tmp_path, ("127.0.0.1", 1), nginx="no-such-nginx-binary")
    with pytest.raises(GatewayError, match="apt-get install nginx"):
        gw.start()


def test_access_log_aggregation() -> None:
    lines = [
        b'{"time":1000.000,"route":"r","group":"a","status":200,"request_time":0.010}',
        b'{"time":1000.500,"route":"r","group":"a","status":502,"request_time":0.030}',
        b'{"time":1001.000,"route":"r","group":"b","status":200,"request_time":0.020}',
        b'{"time":1001.000,"route":"other","group":"a","status":500,"request_time":1}',
        b'{"time":1001.000,"route":"","group":"","status":404,"request_time":0}',
        b'{"time":10',
        b"",
    ]
    entries = [e for e in map(parse_line, lines) if e is not None]
    assert len(entries) == 4
    metrics = aggregate(entries, "r", 1_000_000, groups=["a", "b", "c"])
    assert metrics["a"].requests == 2 and metrics["a"].errors == 1
    assert metrics["a"].p99_ms == pytest.approx(10 + 20 * 0.99)
    assert metrics["b"].p99_ms == pytest.approx(20)
    assert metrics["c"] == GroupMetrics()
    assert aggregate(entries, "r", 1_000_500, groups=["a"])["a"].requests == 1


def _kill_master(gw: NginxGateway) -> tuple[int, set[int]]:
    """kill -9 the master, as the OOM killer would; its pid and the workers it leaves."""
    pid = int((gw.directory / "nginx.pid").read_text())
    workers = {p for p in _pids() if _group_of(p) == pid and p != pid}
    os.kill(pid, signal.SIGKILL)
    # Not `gw.running`: a watch may have started a new master already. Nor the pid's command
    # line: a killed process has none before its parent can reap it.
    wait_for(lambda: gw.master_pid != pid, 10, "the master gone")
    return pid, workers


def _pids() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.slow
@needs_nginx
def test_a_killed_master_is_started_again_with_every_route(
    gateway: NginxGateway, backends: Backends
) -> None:
    """kill -9 of nginx's master leaves its workers serving the old config, holding the port:
    no reload could change the weights and no new master could bind. `revive` stops them and
    starts nginx again with the routes as applied; the next weights apply as usual."""
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    old, workers = _kill_master(gateway)
    assert workers and not any(exited(w) for w in workers)  # orphans, still serving

    pid = gateway.revive()
    assert pid is not None and pid != old and gateway.running
    assert all(exited(w) for w in workers)  # stopped, their sockets closed
    assert bodies(gateway, 5) == Counter({"stable": 5})
    applied(gateway, spec(backends), {"stable": 0, "canary": 100})
    assert bodies(gateway, 5) == Counter({"canary": 5})
    assert gateway.revive() is None  # running: nothing to do


@pytest.mark.slow
@needs_nginx
def test_weights_applied_after_the_master_died_start_nginx_again(
    gateway: NginxGateway, backends: Backends
) -> None:
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    _kill_master(gateway)
    applied(gateway, spec(backends), {"stable": 0, "canary": 100})
    assert gateway.running and bodies(gateway, 5) == Counter({"canary": 5})


@pytest.mark.slow
@needs_nginx
def test_a_restarted_server_starts_nginx_where_a_killed_one_left_workers(
    gateway: NginxGateway, backends: Backends
) -> None:
    """A server restarted after its nginx master was killed: a new adapter on the same
    directory starts nginx although the old workers held the port."""
    applied(gateway, spec(backends), {"stable": 0, "canary": 100})
    _kill_master(gateway)
    again = NginxGateway(gateway.directory, gateway.listen, worker_processes=1)
    again.start()
    try:
        assert bodies(again, 5) == Counter({"canary": 5})
    finally:
        again.stop()


@pytest.mark.slow
@needs_nginx
def test_a_stopped_gateway_is_not_started_again(gateway: NginxGateway, backends: Backends) -> None:
    gateway.stop()
    assert gateway.revive() is None and not gateway.running
    gateway.apply(ROUTE, spec(backends), {"stable": 100, "canary": 0})  # served from start()
    assert not gateway.running


@pytest.mark.slow
@needs_nginx
def test_the_server_watch_starts_a_killed_nginx_again(
    gateway: NginxGateway, backends: Backends
) -> None:
    """The watch `reconcile serve` runs beside its nginx: a killed master is started again
    within a few of its looks, logged and counted on /metrics."""
    applied(gateway, spec(backends), {"stable": 100, "canary": 0})
    metrics = Metrics()
    watch = GatewayWatch(gateway, metrics, interval=0.05)

    async def scenario() -> None:
        await watch.start()
        try:
            assert "reconciler_gateway_restarts_total 0" in metrics.render()
            await asyncio.to_thread(_kill_master, gateway)
            await eventually(lambda: watch.restarts > 0, 20, "the watch starting nginx again")
        finally:
            await watch.stop()

    asyncio.run(scenario())
    assert watch.restarts == 1 and gateway.running
    assert "reconciler_gateway_restarts_total 1" in metrics.render()
    assert bodies(gateway, 3) == Counter({"stable": 3})


@pytest.mark.slow
@needs_nginx
def test_workers_of_a_pid_now_another_process_are_left_alone(
    gateway: NginxGateway, tmp_path: Path
) -> None:
    """The pid file of a master that died long ago may name another process now, leading a
    process group of its own: starting nginx again stops nothing of it."""
    other = NginxGateway(tmp_path / "other", ("127.0.0.1", free_port()), worker_processes=1)
    other.start()
    try:
        foreign = int((other.directory / "nginx.pid").read_text())
        gateway.stop()
        (gateway.directory / "nginx.pid").write_text(f"{foreign}\n")
        gateway.start()
        assert gateway.running and other.running
        assert not exited(foreign)
    finally:
        other.stop()


@pytest.mark.slow
@needs_nginx
def test_a_restart_that_fails_shows_in_the_loops_status_until_it_works(
    gateway: NginxGateway,
) -> None:
    """As docs/canary-deployments.md says: nginx that cannot start again (another process
    took its port) is a failure of the `gateway` loop in the server's status, and a later
    look starts it once the port is free."""
    _, workers = _kill_master(gateway)
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    wait_for(lambda: all(exited(w) for w in workers), 10, "the workers gone, socket and all")
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(gateway.listen)
    taken.listen()
    metrics = Metrics()
    loops = Supervisor(metrics, lambda: datetime.now(UTC), first_backoff=0.05)
    watch = GatewayWatch(gateway, metrics, interval=0.05, loops=loops)

    async def scenario() -> None:
        await watch.start()
        try:
            await eventually(lambda: "gateway" in loops.failing, 20, "the failed start reported")
            assert "Address already in use" in loops.status()["gateway"]["last_error"]
            taken.close()
            await eventually(lambda: watch.restarts > 0, 30, "nginx started once the port is free")
        finally:
            await watch.stop()
            taken.close()

    asyncio.run(scenario())
    assert gateway.running and not loops.failing
