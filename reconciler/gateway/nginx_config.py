"""The gateway's nginx config as text: the main config and each route's files. No I/O.

A route named `<route>` becomes `routes/<id>.conf` (http context: one upstream per group, a
`split_clients` on the weights, a map to the chosen upstream) and `routes/<id>.locations`
(server context: the location(s) proxying to it). `<id>` is the route name with every
character but [a-z0-9] written as `_xx` (hex). The first lines of each `.conf` carry the
applied weights and the config generation as JSON (`parse_state` reads them back).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from reconciler.core import upstreams
from reconciler.gateway.base import GatewayError, check_weights
from schemas.route import RouteSpec

_ROUTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")
STATE_PREFIX = "# state: "
LOG_FORMAT = (
    '\'{"time":$msec,"route":"$gw_route","group":"$gw_group","status":$status,'
    '"request_time":$request_time,"upstream_response_time":"$upstream_response_time",'
    '"upstream_status":"$upstream_status","upstream_addr":"$upstream_addr",'
    '"generation":"$gw_generation","request_id":"$request_id",'
    '"method":"$request_method","uri":"$uri"}\''
)


def ident(name: str) -> str:
    """`name` with every character but [a-z0-9] as `_xx`: injective, never contains `__`."""
    return "".join(
        c if c.isascii() and (c.islower() or c.isdigit()) else f"_{ord(c):02x}" for c in name
    )


def quote(text: str) -> str:
    """A double-quoted nginx string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def map_key(name: str) -> str:
    """A group name as a `map` source value, read literally whatever it is.

    In a `map` block nginx reads `default`, `hostnames`, `include` and `volatile` as its own
    parameters (`include` as a file to read), and drops one leading `\\` from any source
    value; every name gets one, so no group name is ever read as a parameter.
    """
    return "\\" + name


def render_route(
    route: str, spec: RouteSpec, weights: Mapping[str, int], generation: int, split_key: str
) -> tuple[str, str]:
    """The http-context and server-context config of one route.

    Zero-weight groups keep their upstream but get no share of split_clients (nginx rejects
    `0%`); the last group with weight takes `*`, so rounding can never leave traffic unrouted.

    Returns:
        (routes/<id>.conf, routes/<id>.locations) contents.
    """
    if not _ROUTE.match(route):
        raise GatewayError(f"route name {route!r}: use letters, digits and . _ / - only")
    full = check_weights(route, spec, weights)
    rid = ident(route)
    state = {"route": route, "generation": generation, "weights": full}
    http = [
        f"# canary-reconciler gateway route {route} (generated; edits are overwritten)",
        STATE_PREFIX + orjson.dumps(state).decode(),
    ]
    targets = []
    for group in spec.traffic_split or []:
        try:
            servers = upstreams.upstream(group)
        except upstreams.UnservableBackend as refused:
            where = f"route {route!r}, group {group.name!r}: {refused.field}"
            raise GatewayError(f"{where}: {refused}") from None
        upstream = f"gw_{rid}__{ident(group.name)}"
        http += [f"upstream {upstream} {{"]
        http += [
            f"    server {address}{f' weight={weight}' if weight > 1 else ''};"
            for address, weight in servers.servers
        ]
        http += ["    keepalive 16;", "}"]
        targets.append(f"    {map_key(group.name)} {servers.scheme}://{upstream};")
    shares = [(name, weight) for name, weight in full.items() if weight > 0]
    http += [f"split_clients {quote(split_key)} $gw_split_{rid} {{"]
    http += [f"    {weight}% {name};" for name, weight in shares[:-1]]
    http += [f"    * {shares[-1][0]};", "}", f"map $gw_split_{rid} $gw_target_{rid} {{"]
    http += [*targets, "}", ""]
    body = [
        f"    set $gw_route {quote(route)};",
        f"    set $gw_group $gw_split_{rid};",
        f"    set $gw_generation {generation};",
        "    add_header X-Gateway-Generation $gw_generation always;",
        f"    proxy_pass $gw_target_{rid};",
        "}",
    ]
    if spec.path_prefix and spec.path.endswith("/"):
        matches = [f"^~ {quote(spec.path)}"]
    elif spec.path_prefix:
        matches = [f"= {quote(spec.path)}", f"^~ {quote(spec.path + '/')}"]
    else:
        matches = [f"= {quote(spec.path)}"]
    locations = [line for match in matches for line in [f"location {match} {{", *body]]
    return "\n".join(http), "\n".join([*locations, ""])


def parse_state(text: str) -> dict[str, Any] | None:
    """The state a route file records in its first lines, None when there is none."""
    for line in text.splitlines()[:5]:
        if line.startswith(STATE_PREFIX):
            try:
                state: dict[str, Any] = orjson.loads(line[len(STATE_PREFIX) :])
            except orjson.JSONDecodeError:
                return None
            return state
    return None


def render_main(workers: int | Literal["auto"], listen: str) -> str:
    """The main nginx.conf: our log format, proxy defaults, and one server including the
    route files (`routes/*.conf` in http, `routes/*.locations` in the server)."""
    temp = [
        f"    {kind}_temp_path temp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]
    config = [
        "# canary-reconciler gateway (generated by NginxGateway.start; edits are overwritten)",
        "daemon off;",
        f"worker_processes {workers};",
        "pid nginx.pid;",
        "error_log logs/error.log warn;",
        "worker_shutdown_timeout 30s;",
        "events { worker_connections 1024; }",
        "http {",
        "    server_tokens off;",
        *temp,
        f"    log_format gateway_json escape=json {LOG_FORMAT};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header X-Request-Id $request_id;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_connect_timeout 5s;",
        "    include routes/*.conf;",
        "    server {",
        f"        listen {listen};",
        '        set $gw_route "";',
        '        set $gw_group "";',
        '        set $gw_generation "";',
        "        access_log logs/access.json gateway_json;",
        "        include routes/*.locations;",
        '        location ~ "^" { access_log off; return 404; }',
        "    }",
        "}",
        "",
    ]
    return "\n".join(config)
