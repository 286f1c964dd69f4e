"""Backends nginx cannot take keep their route off it: `decide` and the nginx config share one
rule (core/upstreams.py), and the plan says why such a route is not driven."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.core.drive import decide
from reconciler.gateway import GatewayError
from reconciler.gateway.nginx_config import render_route
from schemas.route import RouteSpec
from tests.conftest import ConfigRepo, run_cli

ONLY = "a backend is scheme://host[:port] only"


def spec(
    url: str, *, canary_url: str = "http://127.0.0.1:18103", stable: str = "stable"
) -> RouteSpec:
    return RouteSpec.model_validate(
        {
            "path": "/r",
            "path_prefix": True,
            "traffic_split": [
                {"name": stable, "weight": 90, "backends": [{"url": url}]},
                {"name": "canary", "weight": 10, "backends": [{"url": canary_url}]},
            ],
        }
    )


# What the hostile tester put on nginx: every one passed `validate` and was refused at sync.
UNSERVABLE = [
    (
        "http://127.0.0.1:18101/v2",
        "has a path (/v2): nginx here sends every group the client's own path; " + ONLY,
    ),
    (
        "http://127.0.0.1:18101?x=1",
        "has a query: nginx here sends every group the client's own query; " + ONLY,
    ),
    (
        "http://u:p@127.0.0.1:18101",
        "has credentials (user:password@): nginx here does not send them; " + ONLY,
    ),
    (
        "http://unix:/tmp/x.sock",
        "has the host 'unix', which nginx reads as a UNIX socket path (unix:)",
    ),
    # Without a path too: `server unix:80` would be a socket named 80.
    ("http://unix:80", "has the host 'unix', which nginx reads as a UNIX socket path (unix:)"),
    (
        "http://bücher.example:18101",
        "has a host that is not ASCII: nginx here resolves a host name as written; write it as "
        "'xn--bcher-kva.example'",
    ),
    (
        "http://[fe80::1%25eth0]:18101",
        "has an IPv6 zone (%...): nginx here takes an IPv6 address without one",
    ),
    (
        "http://a;b:18101",
        "has the host 'a;b', not a host name or IP address: use letters, digits, '-' and '_' "
        "between dots",
    ),
    (
        "http://a..b:18101",
        "has the host 'a..b', not a host name or IP address: use letters, digits, '-' and '_' "
        "between dots",
    ),
    (
        "http://${env:BACKHOST}:18101",
        "has a ${...} reference: nothing fills one in for a route, and nginx here takes the URL "
        "as written",
    ),
    ("http://127.0.0.1:18101#top", "has a fragment; " + ONLY),
]


@pytest.mark.parametrize(("url", "reason"), UNSERVABLE, ids=[u for u, _ in UNSERVABLE])
def test_a_backend_nginx_cannot_take_keeps_the_route_off_it(url: str, reason: str) -> None:
    decision = decide(spec(url))
    assert not decision.driven
    assert decision.blocking == (f"traffic_split[stable].backends[0].url: {url!r} {reason}",)


@pytest.mark.parametrize(("url", "reason"), UNSERVABLE, ids=[u for u, _ in UNSERVABLE])
def test_the_nginx_config_refuses_it_by_the_same_rule(url: str, reason: str) -> None:
    with pytest.raises(GatewayError) as raised:
        render_route("r", spec(url), {"stable": 90, "canary": 10}, 1, "$request_id")
    assert str(raised.value) == f"route 'r', group 'stable': backends[0].url: {url!r} {reason}"


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("http://127.0.0.1:18101", "127.0.0.1:18101"),
        ("http://127.0.0.1:18101/", "127.0.0.1:18101"),
        ("http://[::1]:18101", "[::1]:18101"),
        ("https://api.internal", "api.internal:443"),
        ("http://Backend-1.Example.:8080", "backend-1.example.:8080"),
        # Whether a name resolves is known only to nginx's resolver, when it loads the config.
        ("http://my_host:18101", "my_host:18101"),
    ],
)
def test_a_plain_backend_is_driven_and_rendered(url: str, server: str) -> None:
    route = spec(url, canary_url=url)
    assert decide(route).driven
    http, _ = render_route("r", route, {"stable": 90, "canary": 10}, 1, "$request_id")
    assert f"    server {server};" in http


def test_a_group_mixing_http_and_https_is_not_driven() -> None:
    route = RouteSpec.model_validate(
        {
            "path": "/r",
            "traffic_split": [
                {
                    "name": "main",
                    "weight": 100,
                    "backends": [{"url": "http://a:80"}, {"url": "https://b:443"}],
                }
            ],
        }
    )
    assert decide(route).blocking == (
        "traffic_split[main].backends: mixes http and https: nginx here proxies a group over "
        "one scheme",
    )
    with pytest.raises(GatewayError, match="group 'main': backends: mixes http and https"):
        render_route("r", route, {"main": 100}, 1, "$request_id")


def test_every_unservable_backend_of_a_route_is_named() -> None:
    route = spec("http://a/v2", canary_url="http://u@b")
    assert [reason.split(":")[0] for reason in decide(route).blocking] == [
        "traffic_split[stable].backends[0].url",
        "traffic_split[canary].backends[0].url",
    ]


@pytest.mark.parametrize("name", ["include", "default", "hostnames", "volatile"])
def test_a_group_named_like_a_map_parameter_is_a_map_key(name: str) -> None:
    """nginx reads these words as `map` parameters; `\\` makes any source value literal."""
    http, _ = render_route("r", spec("http://a:80", stable=name), {name: 90, "canary": 10}, 1, "k")
    assert f"    \\{name} http://gw_r__{name};" in http
    assert "    \\canary http://gw_r__canary;" in http


ROUTE = """
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: url-path
spec:
  path: /url-path
  path_prefix: true
  traffic_split:
    - name: stable
      weight: 90
      backends: [{url: "http://127.0.0.1:18101/v2"}]
    - name: canary
      weight: 10
      backends: [{url: "http://127.0.0.1:18103"}]
  canary:
    canary_group: canary
    auto_start: true
    steps: [{weight: 50}]
"""


def test_the_plan_shows_the_route_not_driven_and_starts_no_run(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    config_repo.write("route.yaml", ROUTE)
    config_repo.commit("a route whose backend has a path")
    reason = (
        "traffic_split[stable].backends[0].url: 'http://127.0.0.1:18101/v2' has a path (/v2): "
        "nginx here sends every group the client's own path; " + ONLY
    )
    state = tmp_path / "state.duckdb"
    result = run_cli("plan", "--repo", config_repo.path, "--state", state, "--format", "json")
    assert result.code == 0, result.err + result.out
    plan = json.loads(result.out)
    assert plan["not_driven"] == [{"route": "url-path", "reasons": [reason]}]
    assert plan["canary_runs"] == []
    assert [c["address"] for c in plan["changes"]] == ["route.url-path"]

    text = run_cli("plan", "--repo", config_repo.path, "--state", state).out
    assert (
        "Warning: route.yaml:1:1: Route/url-path: not driven on the gateway (never put on nginx, "
        f"no canary run): {reason}"
    ) in text


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/a/../b", "a '..' segment in '/a/../b'"),
        ("/a//b", "'//' in '/a//b'"),
        ("/n\0m", "the path holds a NUL character"),
    ],
)
def test_a_gateway_path_no_request_reaches_on_nginx_is_not_driven(path: str, said: str) -> None:
    """The gateway project matches these as written (a gateway file may hold them); nginx
    resolves the request path first, so none reaches the route there: kept off it, not
    written into its config."""
    route = spec("http://127.0.0.1:18101").model_copy(update={"path": path})
    decision = decide(route)
    assert not decision.driven
    assert [reason for reason in decision.blocking if reason.startswith("path: ")] == [
        next(reason for reason in decision.blocking if said in reason)
    ]
