"""The canary controller on the in-memory gateway: a real state file, a clock the test moves,
traffic the test records; progression, rollback and self-healing decided tick by tick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.resources import Resource
from reconciler.gateway.base import GatewayError, GroupMetrics
from reconciler.gateway.memory import MemoryGateway
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.store.handle import StateHandle
from reconciler.store.resources import all_resources
from schemas.route import RouteSpec
from tests.conftest import ConfigRepo, run_cli

ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: checkout
spec:
  path: /checkout
  traffic_split:
    - name: stable
      weight: 95
      backends: [{url: 'http://127.0.0.1:9001'}]
    - name: canary
      weight: 5
      backends: [{url: 'http://127.0.0.1:9003'}]
  canary:
    canary_group: canary
    auto_start: true
    steps:
      - weight: 10
        pause: 1m
      - weight: 50
        pause: 1m
      - weight: 100
    analysis:
      error_threshold: 0.05
      min_requests: 5
      max_failures: 2
      interval: 30s
"""
ORIGINAL = {"stable": 95, "canary": 5}
PERIOD = timedelta(seconds=30)


class Clock:
    """The controller's clock; only the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta = PERIOD) -> None:
        self.now += by


@dataclass
class Rig:
    """A canary controller on a state file and the in-memory gateway, and what it saw."""

    state: StateHandle
    routes: list[Resource]
    gateway: MemoryGateway = field(default_factory=MemoryGateway)
    clock: Clock = field(default_factory=Clock)
    events: list[dict[str, Any]] = field(default_factory=list)
    controller: DeploymentController = field(init=False)

    def __post_init__(self) -> None:
        # The routes are read at every tick, so a test can take one out of the config.
        self.controller = DeploymentController(
            self.state, self.clock, lambda: self.routes, self.events.append, self.gateway,
            interval=3600,
        )  # fmt: skip

    async def view(self) -> dict[str, Any]:
        [view] = await self.controller.snapshot()
        return dict(view)

    def serve(self, canary_errors: int = 0) -> None:
        """One period of traffic at the current time: 20 requests to stable, 10 to canary."""
        self.gateway.record("checkout", "stable", self.clock.now, [20.0] * 20)
        self.gateway.record("checkout", "canary", self.clock.now, [22.0] * 10, canary_errors)

    async def run_until(self, state: str, canary_errors: int = 0, periods: int = 20) -> None:
        """Serve a period, move the clock, tick; until the run reaches `state`."""
        for _ in range(periods):
            self.serve(canary_errors)
            self.clock.advance()
            await self.controller.tick_all()
            if (await self.view())["state"] == state:
                return
        raise AssertionError(f"not {state} after {periods} periods: {await self.view()}")


@pytest.fixture
async def rig(config_repo: ConfigRepo, tmp_path: Path) -> AsyncIterator[Rig]:
    config_repo.write("routes/checkout.yaml", ROUTE)
    config_repo.commit("route with a canary")
    state = tmp_path / "state.duckdb"
    assert (
        run_cli("apply", "--repo", config_repo.path, "--state", state, "--auto-approve").code == 0
    )
    handle = StateHandle(state)
    try:
        routes = [r for r in await handle.read(all_resources) if r.kind == "Route"]
        yield Rig(handle, routes)
    finally:
        handle.close()


def applied(gateway: MemoryGateway) -> list[dict[str, int] | None]:
    return [weights for route, weights in gateway.history if route == "checkout"]


@pytest.mark.anyio
async def test_a_healthy_canary_walks_every_step_on_the_gateway(rig: Rig) -> None:
    await rig.controller.tick_all()
    assert (await rig.view())["state"] == "progressing", "auto_start"
    assert rig.gateway.weights("checkout") == {"stable": 90, "canary": 10}

    await rig.run_until("completed")
    assert rig.gateway.weights("checkout") == {"stable": 0, "canary": 100}
    # Each step's weights were applied once, in order: one reload per step.
    assert applied(rig.gateway) == [
        {"stable": 90, "canary": 10},
        {"stable": 50, "canary": 50},
        {"stable": 0, "canary": 100},
    ]
    assert [e["type"] for e in rig.events] == [
        "canary_started",
        "canary_step",
        "canary_step",
        "canary_completed",
    ]
    evaluations = (await rig.view())["evaluations"]
    assert evaluations and {e["verdict"] for e in evaluations} == {"pass"}
    # Each evaluation judges what its step served so far (one more period each time).
    assert [(e["step"], e["canary_requests"], e["baseline_requests"]) for e in evaluations] == [
        (2, 10, 20),
        (1, 20, 40),
        (1, 10, 20),
        (0, 20, 40),
        (0, 10, 20),
    ]


@pytest.mark.anyio
async def test_a_failing_canary_is_rolled_back_on_the_gateway(rig: Rig) -> None:
    await rig.controller.tick_all()
    await rig.run_until("rolled_back", canary_errors=3)
    assert rig.gateway.weights("checkout") == ORIGINAL, "rollback_to: original"
    assert applied(rig.gateway) == [{"stable": 90, "canary": 10}, ORIGINAL]
    view = await rig.view()
    assert [e["verdict"] for e in view["evaluations"]] == ["fail", "fail"], "max_failures 2"
    assert "error" in view["evaluations"][0]["reason"]
    assert rig.events[-1]["type"] == "canary_rolled_back"


@pytest.mark.anyio
async def test_weights_a_gateway_refused_are_applied_once_it_accepts(rig: Rig) -> None:
    rig.gateway.refusing = "nginx -t: configuration file test failed"
    await rig.controller.tick_all()
    view = await rig.view()
    assert view["state"] == "pending", "auto_start waits until the gateway takes step 1"
    assert "held: the gateway refused weights stable 90%, canary 10%" in view["reason"]
    assert rig.gateway.weights("checkout") is None
    assert not rig.events

    rig.gateway.refusing = None
    rig.clock.advance(timedelta(seconds=1))  # the route's first backoff
    await rig.controller.tick_all()
    assert rig.gateway.weights("checkout") == {"stable": 90, "canary": 10}
    view = await rig.view()
    assert (view["state"], view["gateway_refusal"]) == ("progressing", None)


@pytest.mark.anyio
async def test_a_route_that_leaves_the_configuration_leaves_the_gateway(rig: Rig) -> None:
    await rig.controller.tick_all()
    assert rig.gateway.weights("checkout") is not None
    rig.routes = []
    await rig.controller.tick_all()
    assert rig.gateway.weights("checkout") is None
    assert applied(rig.gateway)[-1] is None


def test_the_memory_gateway_refuses_what_nginx_refuses_and_reports_since_a_time() -> None:
    spec = RouteSpec.model_validate(
        {
            "path": "/x",
            "traffic_split": [
                {"name": "a", "weight": 50, "backends": [{"url": "http://127.0.0.1:9011"}]},
                {"name": "b", "weight": 50, "backends": [{"url": "http://127.0.0.1:9012"}]},
            ],
        },
        strict=False,
    )
    gateway = MemoryGateway()
    with pytest.raises(GatewayError, match="sum to 90"):
        gateway.apply("x", spec, {"a": 40, "b": 50})
    with pytest.raises(GatewayError, match="unknown group"):
        gateway.apply("x", spec, {"a": 50, "c": 50})
    assert gateway.weights("x") is None
    gateway.apply("x", spec, {"a": 100})
    assert gateway.weights("x") == {"a": 100, "b": 0}

    start = datetime(2026, 1, 1, tzinfo=UTC)
    gateway.record("x", "a", start, [10.0, 30.0], errors=1)
    gateway.record("x", "a", start + timedelta(minutes=1), [20.0])
    assert gateway.metrics("x", start) == {
        "a": GroupMetrics.from_samples(1, [10.0, 30.0, 20.0]),
        "b": GroupMetrics(),
    }
    later = gateway.metrics("x", start + timedelta(seconds=1))
    assert (later["a"].requests, later["a"].errors, later["a"].p99_ms) == (1, 0, 20.0)
    with pytest.raises(ValueError, match="errors"):
        gateway.record("x", "a", start, [1.0], errors=2)


@pytest.mark.anyio
async def test_a_route_removed_while_no_server_ran_leaves_the_gateway(rig: Rig) -> None:
    """The gateway keeps a route's config across restarts (nginx's files); a route taken out
    of the configuration while the server was down is removed at the next server's first
    pass, not served for good with its last weights."""
    await rig.controller.tick_all()
    assert rig.gateway.routes() == ["checkout"]
    restarted = DeploymentController(
        rig.state, rig.clock, list, rig.events.append, rig.gateway, interval=3600
    )
    await restarted.tick_all()
    assert rig.gateway.routes() == [] and rig.gateway.weights("checkout") is None
    assert applied(rig.gateway)[-1] is None


@pytest.mark.anyio
async def test_a_route_the_gateway_refused_to_remove_is_removed_at_a_later_pass(
    rig: Rig,
) -> None:
    await rig.controller.tick_all()
    rig.routes = []
    rig.gateway.refusing = "nginx -t: configuration file test failed"
    await rig.controller.tick_all()
    assert rig.gateway.routes() == ["checkout"]
    rig.gateway.refusing = None
    await rig.controller.tick_all()
    assert rig.gateway.routes() == ["checkout"], "not tried again before its backoff"
    rig.clock.advance(timedelta(seconds=1))
    await rig.controller.tick_all()
    assert rig.gateway.routes() == []
