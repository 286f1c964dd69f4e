"""The nginx data plane when its directory cannot be written, and its config generation across
removals and restarts (a real nginx, on 127.0.0.1)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.gateway import GatewayError, NginxGateway
from tests import test_gateway_nginx
from tests.test_gateway_nginx import ROUTE, Backends, applied, bodies, get, needs_nginx, spec

pytestmark = [pytest.mark.slow, needs_nginx]
# The fixtures: loopback backends answering their name, and a started nginx gateway.
backends = test_gateway_nginx.backends
gateway = test_gateway_nginx.gateway

TO_STABLE = {"stable": 100, "canary": 0}
TO_CANARY = {"stable": 0, "canary": 100}


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """`chattr +i` on a directory for the block: nothing in it can be created, renamed or
    removed, even by root (as a read-only mount, or a full disk for new files)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def _files(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(directory.iterdir())}


def test_an_unwritable_routes_directory_is_a_gateway_error_and_changes_nothing(
    gateway: NginxGateway, backends: Backends
) -> None:
    applied(gateway, spec(backends), TO_STABLE)
    routes = gateway.directory / "routes"
    before = _files(routes)
    with immutable(routes):
        with pytest.raises(GatewayError) as raised:
            gateway.apply(ROUTE, spec(backends), TO_CANARY)
        message = str(raised.value)
        assert message.startswith(
            "route 'shop/checkout' not applied, the previous config keeps serving: cannot write "
        )
        assert message.endswith("Operation not permitted"), message
        with pytest.raises(GatewayError, match="not applied.*Operation not permitted"):
            gateway.remove(ROUTE)
        assert gateway.weights(ROUTE) == TO_STABLE
        assert bodies(gateway, 10) == {"stable": 10}
    assert _files(routes) == before, "nothing half written, nothing left beside"
    applied(gateway, spec(backends), TO_CANARY)
    assert bodies(gateway, 10) == {"canary": 10}


def test_files_written_before_a_failure_are_put_back(
    gateway: NginxGateway, backends: Backends
) -> None:
    """The route files can be written, the generation beside nginx.conf cannot: the route
    files already written are put back, and the error says which file failed."""
    applied(gateway, spec(backends), TO_STABLE)
    routes = gateway.directory / "routes"
    before = _files(routes)
    with immutable(gateway.directory), pytest.raises(GatewayError) as raised:
        gateway.apply(ROUTE, spec(backends), TO_CANARY)
    assert f"cannot write {gateway.directory}/" in str(raised.value)
    assert "could not all be put back" not in str(raised.value)
    assert _files(routes) == before
    assert gateway.weights(ROUTE) == TO_STABLE
    assert bodies(gateway, 10) == {"stable": 10}


def test_the_generation_never_goes_back(gateway: NginxGateway, backends: Backends) -> None:
    """X-Gateway-Generation grows with every applied change, also after every route was
    removed, and for the adapter of a restarted server."""
    applied(gateway, spec(backends), TO_STABLE)
    applied(gateway, spec(backends), TO_CANARY)
    second = gateway.generation(ROUTE)
    assert second is not None and second >= 2

    gateway.remove(ROUTE)
    assert gateway.wait_reloaded(timeout=10)
    assert gateway.routes() == []
    applied(gateway, spec(backends), TO_STABLE)
    third = gateway.generation(ROUTE)
    assert third is not None and third > second
    assert get(gateway)[2] == str(third)

    gateway.remove(ROUTE)
    restarted = NginxGateway(gateway.directory, gateway.listen, worker_processes=1)
    restarted.start()  # adopts the running master
    applied(restarted, spec(backends), TO_STABLE)
    fourth = restarted.generation(ROUTE)
    assert fourth is not None and fourth > third
