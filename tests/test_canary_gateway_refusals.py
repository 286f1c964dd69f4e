"""The canary controller on a real nginx that refuses weights: a run never moves forward on
weights nginx did not take, a rollback stands and is applied once nginx takes it, and a
refused route is tried again with a backoff of its own (a clock the test moves; loopback)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.refusal import RequestRefused
from reconciler.gateway import NginxGateway
from reconciler.gateway.base import GroupMetrics
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.store import deployments as store
from reconciler.store.handle import StateHandle
from reconciler.store.resources import all_resources
from schemas.route import RouteSpec
from tests import test_gateway_nginx
from tests.conftest import ConfigRepo, run_cli
from tests.inprocess import InProcessServer, running_in_process
from tests.test_gateway_nginx import Backends, bodies, free_port, needs_nginx
from tests.test_gateway_nginx_failures import immutable
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, needs_nginx]
backends = test_gateway_nginx.backends  # the fixture: loopback backends answering their name

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: {name}
spec:
  path: {path}
  path_prefix: true
  traffic_split:
    - name: stable
      weight: 100
      backends: [{{url: '{stable}'}}]
    - name: canary
      weight: 0
      backends: [{{url: '{canary}'}}]
  canary:
    canary_group: canary
    auto_start: true
    steps:
      - weight: 50
        pause: 1m
      - weight: 100
        pause: 1m
    analysis:
      error_threshold: 0.1
      min_requests: 0
      max_failures: 1
      interval: 30s
"""
STEP_1 = {"stable": 50, "canary": 50}
STEP_2 = {"stable": 0, "canary": 100}
ORIGINAL = {"stable": 100, "canary": 0}
HOLD = timedelta(minutes=1, seconds=1)
JUNK = "junk;\n"  # another file in the routes directory nginx cannot read: every `nginx -t` fails


class Clock:
    """The controller's clock; only the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@dataclass
class Rig:
    """A canary controller on a state file and a real nginx, and what it did."""

    state: StateHandle
    routes: list[Any]
    gateway: NginxGateway
    clock: Clock = field(default_factory=Clock)
    events: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    controller: DeploymentController = field(init=False)

    def __post_init__(self) -> None:
        apply = self.gateway.apply

        def counted(route: str, spec: RouteSpec, weights: Any) -> None:
            self.attempts.append((route, dict(weights)))  # every try runs `nginx -t`
            apply(route, spec, weights)

        self.gateway.apply = counted  # type: ignore[method-assign]
        self.controller = DeploymentController(
            self.state, self.clock, lambda: self.routes, self.events.append, self.gateway,
            interval=3600,
        )  # fmt: skip

    @property
    def junk(self) -> Path:
        return self.gateway.directory / "routes" / "zz.conf"

    async def view(self, route: str = "checkout") -> dict[str, Any]:
        [view] = await self.controller.snapshot(route)
        return dict(view)

    async def stored(self, route: str = "checkout") -> store.StoredRun:
        return (await self.state.read(store.latest_runs))[route]

    async def tick(self, by: timedelta = timedelta(0)) -> None:
        self.clock.advance(by)
        await self.controller.tick_all()

    def tries(self, route: str = "checkout") -> int:
        return sum(1 for name, _ in self.attempts if name == route)


def _route(name: str, path: str, stable: str, canary: str) -> str:
    return ROUTE.format(name=name, path=path, stable=stable, canary=canary)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxGateway]:
    gateway = NginxGateway(tmp_path / "gw", ("127.0.0.1", free_port()), worker_processes=1)
    gateway.start()
    yield gateway
    gateway.stop()


async def _rig(config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway) -> Rig:
    state = tmp_path / "state.duckdb"
    config_repo.commit("routes with a canary")
    applied = run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve")
    assert applied.code == 0, applied.err
    handle = StateHandle(state)
    routes = [r for r in await handle.read(all_resources) if r.kind == "Route"]
    return Rig(handle, routes, nginx)


@pytest.fixture
async def rig(
    config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway, backends: Backends
) -> AsyncIterator[Rig]:
    config_repo.write(
        "routes/checkout.yaml",
        _route("checkout", "/checkout", backends["stable"].url, backends["canary"].url),
    )
    rig = await _rig(config_repo, tmp_path, nginx)
    try:
        await rig.tick()
        assert (await rig.view())["state"] == "progressing", "auto_start"
        assert nginx.weights("checkout") == STEP_1
        assert nginx.wait_reloaded(timeout=10)
        yield rig
    finally:
        rig.state.close()


def _served(rig: Rig, count: int = 40) -> set[str]:
    """The groups that answered `count` requests through nginx (at 50 %, both do), once only
    the newest config serves."""
    assert rig.gateway.wait_reloaded(timeout=10)
    return set(bodies(rig.gateway, count))


@pytest.mark.anyio
async def test_a_run_holds_its_step_while_nginx_refuses_the_next_and_moves_on_once_it_takes_it(
    rig: Rig,
) -> None:
    rig.junk.write_text(JUNK)
    before = (await rig.stored()).runtime
    events = len(rig.events)

    await rig.tick(HOLD)  # the step's hold is over: the next step is due
    view = await rig.view()
    assert (view["state"], view["step"], view["weights"]) == ("progressing", 0, STEP_1)
    assert view["gateway_weights"] == STEP_1 and rig.gateway.weights("checkout") == STEP_1
    assert "held: the gateway refused weights stable 0%, canary 100%" in view["reason"]
    assert "unknown directive" in view["reason"]
    refusal = view["gateway_refusal"]
    assert (refusal["weights"], refusal["refusals"]) == (STEP_2, 1)
    assert "unknown directive" in refusal["error"]
    assert len(rig.events) == events, "no canary_step for a step nginx did not take"
    stored = await rig.stored()
    assert stored.runtime is not None and before is not None
    assert (stored.state, stored.runtime["step"], stored.runtime["weights"]) == (
        "progressing", 0, STEP_1,
    )  # fmt: skip
    assert _served(rig) == {"stable", "canary"}

    # Five minutes of passes: never past step 1, never completed.
    for _ in range(10):
        await rig.tick(timedelta(seconds=30))
        view = await rig.view()
        assert (view["state"], view["step"]) == ("progressing", 0)
    assert rig.gateway.weights("checkout") == STEP_1

    rig.junk.unlink()
    await rig.tick(timedelta(minutes=1))  # past the backoff
    view = await rig.view()
    assert (view["state"], view["step"], view["gateway_weights"]) == ("progressing", 1, STEP_2)
    assert view["gateway_refusal"] is None and "held" not in view["reason"]
    assert rig.events[-1]["type"] == "canary_step"
    assert _served(rig, 10) == {"canary"}

    await rig.tick(HOLD)
    assert (await rig.view())["state"] == "completed"


@pytest.mark.anyio
async def test_a_refused_route_is_tried_again_with_a_backoff_of_its_own(
    config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway, backends: Backends,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """nginx refuses one route's config by itself (a backend host that does not resolve):
    `nginx -t` runs for it 1, 2, 4 …
    seconds apart, not at every pass, while the healthy route goes through its steps on time;
    each refusal is one log line without a traceback."""
    stable, canary = backends["stable"].url, backends["canary"].url
    config_repo.write("routes/checkout.yaml", _route("checkout", "/checkout", stable, canary))
    nowhere = "http://no-such-host.invalid:8080"  # RFC 2606: never resolves
    config_repo.write("routes/broken.yaml", _route("broken", "/broken", stable, nowhere))
    rig = await _rig(config_repo, tmp_path, nginx)
    caplog.set_level(logging.INFO)
    try:
        await rig.tick()
        assert rig.tries("broken") == 1 and nginx.weights("broken") is None
        for _ in range(10):
            await rig.tick()  # passes woken by other things: no new try before the backoff
        assert rig.tries("broken") == 1
        assert (await rig.view("broken"))["state"] == "pending", "not started on refused weights"

        # 150 passes a second apart: tries at 1, 3, 7, 15, 31, 63, 123 s (then each minute).
        for second in range(1, 151):
            await rig.tick(timedelta(seconds=1))
            if second == 62:
                assert rig.tries("broken") == 6
        assert rig.tries("broken") == 8
        view = await rig.view("broken")
        assert view["gateway_refusal"]["refusals"] == 8
        assert "host not found" in view["gateway_refusal"]["error"]
        assert view["state"] == "pending" and "held" in view["reason"]

        healthy = await rig.view("checkout")
        assert (healthy["state"], healthy["gateway_weights"]) == ("completed", STEP_2)
        assert rig.tries("checkout") == 2, "one apply per step"
    finally:
        rig.state.close()
    refusals = [r for r in caplog.records if "the gateway refused weights" in r.getMessage()]
    assert len(refusals) == 8
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in refusals)
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


@pytest.mark.anyio
async def test_a_promote_nginx_refuses_is_an_error_and_changes_nothing(rig: Rig) -> None:
    rig.junk.write_text(JUNK)
    before = await rig.stored()
    with pytest.raises(RequestRefused) as raised:
        await rig.controller.act("checkout", "promote")
    assert raised.value.status == 503
    assert "promote not done: the gateway refused weights" in raised.value.message
    assert "unknown directive" in raised.value.message
    assert raised.value.details["state"] == "progressing"
    assert await rig.stored() == before
    view = await rig.view()
    assert (view["state"], view["weights"], view["gateway_weights"]) == (
        "progressing", STEP_1, STEP_1,
    )  # fmt: skip
    assert not [e for e in rig.events if e["type"] == "canary_completed"]

    rig.junk.unlink()
    done = await rig.controller.act("checkout", "promote")
    assert (done["state"], done["gateway_weights"]) == ("completed", STEP_2)


@pytest.mark.anyio
async def test_a_rollback_nginx_refuses_stands_and_is_applied_once_nginx_takes_it(
    rig: Rig,
) -> None:
    rig.junk.write_text(JUNK)
    with pytest.raises(RequestRefused) as raised:
        await rig.controller.act("checkout", "rollback")
    assert raised.value.status == 503
    assert "rollback recorded (the run is rolled back), but the gateway refused" in (
        raised.value.message
    )
    assert "not applied yet" in raised.value.message and "unknown directive" in raised.value.message
    assert raised.value.details["state"] == "rolled_back"
    assert (await rig.stored()).state == "rolled_back"
    assert rig.events[-1]["type"] == "canary_rolled_back"
    view = await rig.view()
    assert (view["state"], view["weights"], view["gateway_weights"]) == (
        "rolled_back", ORIGINAL, STEP_1,
    )  # fmt: skip
    assert "weights not applied yet: the gateway refused them" in view["reason"]
    assert _served(rig) == {"stable", "canary"}, "nginx still sends the canary its share"

    tries = rig.tries()
    for _ in range(5):
        await rig.tick()  # within the backoff: not tried
    assert rig.tries() == tries
    await rig.tick(timedelta(seconds=1))
    assert rig.tries() == tries + 1 and rig.gateway.weights("checkout") == STEP_1
    with pytest.raises(RequestRefused) as final:
        await rig.controller.act("checkout", "resume")
    assert final.value.status == 409, "a rollback is final"
    with pytest.raises(RequestRefused) as again:
        await rig.controller.act("checkout", "rollback")  # asked again: tried at once
    assert again.value.status == 503 and rig.tries() == tries + 2
    assert "not applied yet" in again.value.message

    rig.junk.unlink()  # fixed: `rollback` again applies the weights without waiting
    view = await rig.controller.act("checkout", "rollback")
    assert (view["state"], view["gateway_weights"]) == ("rolled_back", ORIGINAL)
    assert view["gateway_refusal"] is None and view["reason"] == "rolled back by operator"
    assert _served(rig, 10) == {"stable"}
    with pytest.raises(RequestRefused) as done:
        await rig.controller.act("checkout", "rollback")
    assert done.value.status == 409, "applied: a rollback again is refused as before"


@pytest.mark.anyio
async def test_an_automatic_rollback_nginx_refuses_stands_and_never_progresses(
    rig: Rig, backends: Backends
) -> None:
    backends["canary"].status = 500
    start = (await rig.view())["step_started_at"]
    bodies(rig.gateway, 40)  # half of them to the failing canary

    def seen() -> dict[str, GroupMetrics]:
        return rig.gateway.metrics("checkout", datetime.fromisoformat(start))

    wait_for(lambda: sum(m.requests for m in seen().values()) == 40, 10, "the access log")
    rig.junk.write_text(JUNK)

    await rig.tick(timedelta(seconds=31))  # an evaluation: it fails, max_failures 1
    view = await rig.view()
    assert view["state"] == "rolled_back"
    assert view["evaluations"][0]["verdict"] == "fail"
    assert (view["weights"], view["gateway_weights"]) == (ORIGINAL, STEP_1)
    assert "weights not applied yet" in view["reason"]
    assert rig.events[-1]["type"] == "canary_rolled_back"

    for _ in range(6):
        await rig.tick(HOLD)
        assert (await rig.view())["state"] == "rolled_back"
    assert rig.gateway.weights("checkout") == STEP_1

    rig.junk.unlink()
    await rig.tick(HOLD)
    assert rig.gateway.weights("checkout") == ORIGINAL
    assert (await rig.view())["gateway_refusal"] is None


def _canary(server: InProcessServer) -> dict[str, Any]:
    [view] = server.client.get("/canary").json()["canaries"]
    return dict(view)


def _seen(server: InProcessServer, *fields: str) -> tuple[Any, ...]:
    """Fields of the route's view, read together (the controller changes them one by one)."""
    view = _canary(server)
    return tuple(view[name] for name in fields)


@contextmanager
def _serving(
    config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway, backends: Backends
) -> Iterator[InProcessServer]:
    """A server driving a real nginx, its run at step 1 (for an hour) on nginx."""
    route = _route("checkout", "/checkout", backends["stable"].url, backends["canary"].url)
    config_repo.write("routes/checkout.yaml", route.replace("pause: 1m", "pause: 1h"))
    config_repo.commit("a route with a canary")
    env = {"RECONCILER_CANARY_INTERVAL": "0.05"}
    with running_in_process(
        config_repo.path, tmp_path / "state.duckdb", env, gateway=nginx
    ) as server:
        server.wait_ready()
        # nginx takes step 1's weights first, then the run is stored as progressing.
        wait_for(
            lambda: _seen(server, "state", "gateway_weights") == ("progressing", STEP_1),
            20,
            "the run progressing, step 1 on nginx",
        )
        yield server


def test_an_action_nginx_refuses_answers_503_with_nginx_s_reason(
    config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway, backends: Backends
) -> None:
    junk = nginx.directory / "routes" / "zz.conf"
    with _serving(config_repo, tmp_path, nginx, backends) as server:
        junk.write_text(JUNK)
        refused = server.admin("POST", "/canary/checkout/promote")
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["state"] == "progressing"
        assert "promote not done" in body["error"] and "unknown directive" in body["error"]
        after = _canary(server)
        assert (after["state"], after["step"], after["weights"]) == ("progressing", 0, STEP_1)
        assert after["gateway_weights"] == STEP_1

        rollback = server.admin("POST", "/canary/checkout/rollback")
        assert rollback.status_code == 503, rollback.text
        assert rollback.json()["state"] == "rolled_back"
        assert "not applied yet" in rollback.json()["error"]
        assert "unknown directive" in rollback.json()["error"]
        view = _canary(server)
        assert (view["state"], view["weights"], view["gateway_weights"]) == (
            "rolled_back", ORIGINAL, STEP_1,
        )  # fmt: skip
        assert view["gateway_refusal"]["weights"] == ORIGINAL
        assert "weights not applied yet" in view["reason"]
        # Beside the run, the server's status says the gateway refuses the route.
        status = server.status()["gateway_refusals"]
        assert list(status) == ["checkout"] and "unknown directive" in status["checkout"]["error"]

        junk.unlink()  # the rollback gets through at the controller's next try
        # nginx has the weights a moment before the controller forgets the refusal.
        wait_for(
            lambda: _seen(server, "gateway_weights", "gateway_refusal") == (ORIGINAL, None),
            20,
            "the rollback on nginx",
        )
        assert _canary(server)["state"] == "rolled_back"
        assert server.status()["gateway_refusals"] == {}
        assert "the gateway refused weights" in server.logs()


def test_an_unwritable_gateway_directory_answers_503_not_500(
    config_repo: ConfigRepo, tmp_path: Path, nginx: NginxGateway, backends: Backends
) -> None:
    with _serving(config_repo, tmp_path, nginx, backends) as server:
        with immutable(nginx.directory / "routes"):
            refused = server.admin("POST", "/canary/checkout/promote")
            assert refused.status_code == 503, refused.text
            assert "cannot write" in refused.json()["error"]
            assert "Operation not permitted" in refused.json()["error"]
            view = _canary(server)
            assert (view["state"], view["gateway_weights"]) == ("progressing", STEP_1)
        done = server.admin("POST", "/canary/checkout/promote")
        assert done.status_code == 200, done.text
        assert done.json()["gateway_weights"] == STEP_2
