"""On loopback with real nginx: a gateway file's plain route is served, a route with a
protection nginx cannot reproduce is never put on it, and a route that gains one is taken off."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.agentproc import free_port
from tests.conftest import ConfigRepo
from tests.server import ServerProcess, running_server, wait_for
from tests.test_canary_e2e import Backend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx is not installed (make test installs Debian's nginx package)",
    ),
]

GATEWAY = """
listeners:
  - {{id: http, address: ":8080", protocol: http}}
upstreams:
  pool: {{backends: [{{url: "{url}"}}]}}
routes:
  - id: catalog
    path: /catalog
    upstream: pool
{catalog_extra}
  - id: account
    path: /account
    backends: [{{url: "{url}"}}]
    auth: {{required: true, methods: [jwt]}}
admin: {{enabled: true, port: 8081}}
"""


@contextmanager
def _serving_on_nginx(
    config_repo: ConfigRepo, tmp_path: Path
) -> Iterator[tuple[ServerProcess, httpx.Client, str]]:
    """`reconcile serve` driving its own nginx on a free loopback port: the server, a
    client, and the gateway's base URL."""
    port = free_port()
    extra = (
        "--gateway", "nginx", "--gateway-listen", f"127.0.0.1:{port}",
        "--gateway-dir", str(tmp_path / "gateway"), "--canary-interval", "0.1",
    )  # fmt: skip
    with (
        running_server(config_repo.path, tmp_path / "state.duckdb", extra=extra) as server,
        httpx.Client(timeout=5) as client,
    ):
        server.wait_ready()
        yield server, client, f"http://127.0.0.1:{port}"


def _status(client: httpx.Client, url: str) -> int:
    try:
        return client.get(url).status_code
    except httpx.HTTPError:
        return 0


def test_protected_routes_never_reach_nginx(config_repo: ConfigRepo, tmp_path: Path) -> None:
    backend = Backend("backend")
    gateway_dir = tmp_path / "gateway"
    config_repo.write("gateway.yaml", GATEWAY.format(url=backend.url, catalog_extra=""))
    config_repo.commit("gateway file")
    try:
        with _serving_on_nginx(config_repo, tmp_path) as (_server, client, base):
            wait_for(lambda: _status(client, f"{base}/catalog") == 200, 30, "catalog on nginx")
            assert client.get(f"{base}/catalog").text == "backend"
            # nginx answers 404 for a path no route file claims: the protected route is absent.
            assert client.get(f"{base}/account").status_code == 404
            assert not list(gateway_dir.rglob("account*"))

            protected = '    auth: {required: true, methods: ["api_key"]}'
            config_repo.write(
                "gateway.yaml", GATEWAY.format(url=backend.url, catalog_extra=protected)
            )
            config_repo.commit("catalog now requires credentials")
            wait_for(lambda: _status(client, f"{base}/catalog") == 404, 30, "catalog off nginx")
    finally:
        backend.close()


ROUTES = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: {name}
spec:
  path: /{name}
  path_prefix: true
  traffic_split:
    - {{name: stable, weight: 90, backends: [{{url: "{stable}"}}]}}
    - {{name: canary, weight: 10, backends: [{{url: "{canary}"}}]}}
  canary: {{canary_group: canary, auto_start: true, steps: [{{weight: 50}}]}}
"""


def test_a_route_with_a_backend_nginx_cannot_take_gets_neither_nginx_nor_a_run(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    """It used to be put on nginx, refused at every try (404) while its run completed."""
    backend = Backend("backend")
    gateway_dir = tmp_path / "gateway"
    good = ROUTES.format(name="good", stable=backend.url, canary=backend.url)
    bad = ROUTES.format(name="bad", stable=f"{backend.url}/v2", canary=backend.url)
    config_repo.write("routes.yaml", f"{good}---\n{bad}")
    config_repo.commit("two routes")
    try:
        with _serving_on_nginx(config_repo, tmp_path) as (server, client, base):
            wait_for(lambda: _status(client, f"{base}/good") == 200, 30, "good on nginx")

            def routes() -> set[str]:
                return {view["route"] for view in server.client.get("/canary").json()["canaries"]}

            wait_for(lambda: "good" in routes(), 30, "the good route's run")
            assert routes() == {"good"}
            assert client.get(f"{base}/bad").status_code == 404
            assert not list(gateway_dir.rglob("bad*"))
            assert "the gateway refused" not in server.log.read_text()  # nothing retried
    finally:
        backend.close()
