"""Gateway config files (wudi/gateway) load as that project reads them, and routes our nginx
cannot serve as written are kept off it; our own whole-file corpus is in tests/compat/gateway."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import LoadResult, load_config
from reconciler.gateway.nginx_config import render_route
from tests.conftest import ConfigRepo, run_cli

CORPUS = Path(__file__).parent / "compat" / "gateway"


def _load(text: str, path: str = "gateway.yaml") -> LoadResult:
    content = textwrap.dedent(text).lstrip("\n").encode()
    return load_config([SourceFile(path, "sha", lambda: content)])


def _errors(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity == "error"]


@pytest.fixture
def corpus_repo(config_repo: ConfigRepo) -> ConfigRepo:
    for source in sorted(CORPUS.glob("*.yaml")):
        shutil.copy(source, config_repo.path / source.name)
    config_repo.commit("gateway files")
    return config_repo


def _plan(repo: ConfigRepo, state: Path, fmt: str) -> tuple[int, str]:
    result = run_cli("plan", "--repo", repo.path, "--state", state, "--format", fmt)
    assert result.code == 0, result.err + result.out
    return result.code, result.out


def test_every_corpus_file_validates_and_says_once_what_is_not_read(
    corpus_repo: ConfigRepo,
) -> None:
    result = run_cli("validate", "--repo", corpus_repo.path)
    assert result.code == 0, result.out + result.err
    section_notices = [line for line in result.out.splitlines() if "not read here" in line]
    assert section_notices == [
        "Notice: canary-not-written.yaml:2:1: listeners: configure the gateway process itself "
        "and are not read here; the routes (with their upstreams) are",
        "Notice: complete.yaml:3:1: listeners, registry, authentication, logging, admin: "
        "configure the gateway process itself and are not read here; the routes (with their "
        "upstreams) are",
        "Notice: data-plane.yaml:2:1: cluster, listeners, admin: configure the gateway process "
        "itself and are not read here; the routes (with their upstreams) are",
    ]
    assert "valid (10 documents" in result.out


def test_routes_resolve_backends_lists_and_upstreams(corpus_repo: ConfigRepo) -> None:
    result = load_config(
        [SourceFile(p.name, p.name, p.read_bytes) for p in CORPUS.glob("complete.yaml")]
    )
    assert _errors(result) == []
    routes = {name: r.model.spec for name, r in result.config.routes.items()}
    catalog = routes["catalog"].traffic_split
    assert catalog is not None
    assert [(g.name, g.weight) for g in catalog] == [("default", 100)]
    assert [(b.url, b.weight) for b in catalog[0].backends] == [
        ("http://10.0.2.5:8080", 3),
        ("http://10.0.2.6:8080", 0),
    ]
    search = routes["search"].traffic_split
    assert search is not None and [b.url for b in search[0].backends] == ["http://10.0.4.5:8080"]
    checkout = routes["checkout"].traffic_split
    assert checkout is not None
    assert {g.name: [b.url for b in g.backends] for g in checkout} == {
        "stable": ["http://10.0.0.5:8080", "http://10.0.0.6:8080"],
        "canary": ["http://10.0.1.5:8080"],
    }
    assert routes["catalog"].cache is not None and routes["catalog"].cache.ttl == "60s"
    assert routes["catalog"].gateway_fields == {
        "retry_policy": {"max_retries": 3, "initial_backoff": "100ms"}
    }


def test_plan_starts_a_run_only_for_a_canary_written_enabled(
    corpus_repo: ConfigRepo, tmp_path: Path
) -> None:
    _, out = _plan(corpus_repo, tmp_path / "state.duckdb", "json")
    plan: dict[str, Any] = json.loads(out)
    # orders has a complete canary block with auto_start but no `enabled: true`.
    assert [run["route"] for run in plan["canary_runs"]] == ["checkout"]
    orders = next(c for c in plan["changes"] if c["address"] == "route.orders")
    assert orders["after"]["canary"]["enabled"] is False


def test_enabling_the_canary_in_the_file_starts_a_run(config_repo: ConfigRepo) -> None:
    text = (CORPUS / "canary-not-written.yaml").read_text()
    config_repo.write("gateway.yaml", text)
    config_repo.commit("disabled")
    enabled = text.replace(
        "      canary_group: canary", "      enabled: true\n      canary_group: canary"
    )
    config_repo.write("gateway.yaml", enabled)
    config_repo.commit("enabled")
    result = run_cli("plan", "--repo", config_repo.path, "--base", "HEAD~1", "--format", "json")
    assert result.code == 0, result.err
    runs = json.loads(result.out)["canary_runs"]
    assert [(r["route"], r["reason"]) for r in runs] == [
        ("orders", "traffic split or canary changed")
    ]


def test_plan_shows_routes_that_are_not_driven_in_every_format(
    corpus_repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    plan = json.loads(_plan(corpus_repo, state, "json")[1])
    assert {entry["route"]: entry["reasons"] for entry in plan["not_driven"]} == {
        "account": ["auth.required: nginx here does not authenticate requests"],
        "internal": ["ip_filter: the gateway's ip_filter has no equivalent on nginx here"],
        "payments": [
            "blue_green: the gateway's blue-green controller picks the serving group; "
            "ours does not run it"
        ],
        "public-api": [
            "rate_limit: nginx here does not limit request rates",
            "transform: nginx here does not rewrite headers or bodies",
        ],
    }
    text = _plan(corpus_repo, state, "text")[1]
    assert (
        "Warning: complete.yaml:114:5: Route/account: routes[4]: not driven on the gateway "
        "(never put on nginx, no canary run): auth.required: nginx here does not authenticate "
        "requests"
    ) in text
    markdown = _plan(corpus_repo, state, "markdown")[1]
    assert "#### Warnings" in markdown
    assert re.search(
        r"^- `complete.yaml:\d+:\d+: Route/public-api: routes\[\d\]: not driven on ", markdown, re.M
    )
    github = _plan(corpus_repo, state, "github")[1]
    assert f"::warning file={corpus_repo.path}/complete.yaml,line=114" in github


def test_a_not_driven_route_gets_no_canary_run() -> None:
    result = _load(
        """
        routes:
          - id: pay
            path: /pay
            traffic_split:
              - {name: stable, weight: 90, backends: [{url: "http://a:80"}]}
              - {name: canary, weight: 10, backends: [{url: "http://b:80"}]}
            auth: {required: true}
            canary: {enabled: true, canary_group: canary, steps: [{weight: 100}]}
        """
    )
    desired = compile_config(result.config)
    assert desired.schedules == {}
    assert desired.not_driven == {
        "pay": ("auth.required: nginx here does not authenticate requests",)
    }


def test_auth_not_required_and_disabled_features_keep_a_route_driven() -> None:
    result = _load(
        """
        routes:
          - id: open
            path: /open
            backends: [{url: "http://a:80"}]
            auth: {required: false}
            rate_limit: {enabled: false}
            cors: {enabled: false, allow_origins: ["*"]}
            mirror: {enabled: true, percentage: 10}
        """
    )
    desired = compile_config(result.config)
    assert desired.not_driven == {}
    [notice] = [d for d in desired.diagnostics if d.severity == "notice"]
    assert "served on nginx without mirror" in notice.message


@pytest.mark.parametrize(
    ("route", "field", "message"),
    [
        (
            "upstream: nowhere",
            "routes[0].upstream",
            "upstream 'nowhere' is not defined (upstreams: discovered, pool)",
        ),
        (
            "upstream: pool\n    backends: [{url: 'http://a:80'}]",
            "routes[0].upstream",
            "upstream and backends are mutually exclusive",
        ),
        (
            "backends: [{url: 'http://a:80'}]\n    transforms: {request: {}}",
            "routes[0].transforms",
            "unknown field 'transforms'; did you mean 'transform'? (not a field of the gateway "
            "project either: ignored, as the gateway ignores it silently)",
        ),
        (
            "backends: [{url: 'http://a:80'}]\n    zzz: 1",
            "routes[0].zzz",
            "unknown field 'zzz' (fields: docs/yaml-reference.md#gateway-files) (not a field of "
            "the gateway project either: ignored, as the gateway ignores it silently)",
        ),
        (
            "cors: {enabled: true}",
            "routes[0].backends",
            "the route has nothing to send requests to: add backends, an upstream or a "
            "traffic_split (the gateway refuses such a route too)",
        ),
        (
            "upstream: discovered",
            "routes[0].upstream",
            "upstream 'discovered' lists no backends (service discovery is not supported here: "
            "list them under upstreams.discovered.backends)",
        ),
        (
            "backends: [{url: 'grpc://a:50051'}]",
            "routes[0].backends[0].url",
            "not supported: backend scheme 'grpc' (routes here are proxied over http or https "
            "only)",
        ),
        (
            "backends: [{url: 'http://a:80'}]\n    sticky: {enabled: true, mode: hash}",
            "routes[0].sticky",
            "sticky needs a traffic_split on the route",
        ),
        (
            "traffic_split:\n      - {name: a, weight: 100, backends: [{url: 'http://a:80'}]}\n"
            "    canary: {enabled: true, steps: [{weight: 100}]}",
            "routes[0].canary.canary_group",
            "required when the canary is enabled",
        ),
        (
            "traffic_split:\n      - {name: a, weight: 60, upstream: pool}\n"
            "      - {name: b, weight: 30, upstream: pool}",
            "routes[0].traffic_split",
            "group weights sum to 90; they must sum to 100",
        ),
    ],
)
def test_gateway_rules_name_the_field_and_line(route: str, field: str, message: str) -> None:
    text = (
        "upstreams:\n  pool: {backends: [{url: 'http://p:80'}]}\n"
        "  discovered: {service: {name: orders}}\n"
        f"routes:\n  - id: r\n    path: /r\n    {route}\n"
    )
    result = load_config([SourceFile("gw.yaml", "sha", text.encode)])
    matching = [d for d in result.diagnostics if d.field == field]
    assert [d.message for d in matching] == [message], [d.format() for d in result.diagnostics]
    assert matching[0].path == "gw.yaml" and matching[0].line > 3


def test_an_unknown_top_level_section_is_an_error() -> None:
    result = _load("listeners: []\nroutez: []\n")
    assert _errors(result) == [
        "gateway.yaml:2:1: routez: unknown field 'routez': not a section of the gateway's "
        "config; did you mean 'routes'?"
    ]


def test_backend_weights_reach_the_nginx_upstream() -> None:
    result = load_config([SourceFile("c.yaml", "c", (CORPUS / "complete.yaml").read_bytes)])
    spec = result.config.routes["catalog"].model.spec
    http, _ = render_route("catalog", spec, {"default": 100}, 1, "$request_id")
    assert "    server 10.0.2.5:8080 weight=3;" in http
    assert "    server 10.0.2.6:8080;" in http


def test_the_reference_example_prints_what_the_reference_shows(config_repo: ConfigRepo) -> None:
    reference = (Path(__file__).parent.parent / "docs" / "yaml-reference.md").read_text()
    section = reference[reference.index("## Gateway files") :]
    example = section[
        section.index("```yaml\n") + 8 : section.index("```", section.index("```yaml\n") + 8)
    ]
    config_repo.write("gateway.yaml", example)
    result = run_cli("validate", "--repo", config_repo.path)
    assert result.code == 0, result.out
    shown = [
        line.strip()
        for line in section[: section.index("## Validation rules")].splitlines()
        if line.strip().startswith(("Notice: gateway.yaml", "Warning: gateway.yaml"))
    ]
    assert len(shown) == 3
    for line in shown:
        assert line in result.out.splitlines()


def test_a_route_document_with_a_gateway_protection_is_not_driven_either() -> None:
    result = _load(
        """
        apiVersion: canary-reconciler/v1
        kind: Route
        metadata:
          name: shop
        spec:
          path: /shop
          traffic_split:
            - {name: main, weight: 100, backends: [{url: "http://a:80"}]}
          rate_limit: {rate: 10, period: 1s}
        """,
        "route.yaml",
    )
    assert _errors(result) == []
    desired = compile_config(result.config)
    assert desired.not_driven == {"shop": ("rate_limit: nginx here does not limit request rates",)}


def test_backends_beside_a_traffic_split_are_not_used_and_that_is_said() -> None:
    result = _load(
        """
        routes:
          - id: both
            path: /both
            backends: [{url: "http://unused:80"}]
            traffic_split:
              - {name: main, weight: 100, backends: [{url: "http://a:80"}]}
        """
    )
    assert _errors(result) == []
    [notice] = result.config.notices
    assert notice.format() == (
        "gateway.yaml:4:5: Route/both: routes[0].backends: not used: the traffic_split groups "
        "are served, as the gateway does"
    )
    split = result.config.routes["both"].model.spec.traffic_split
    assert split is not None and [b.url for b in split[0].backends] == ["http://a:80"]


def test_keys_the_gateway_drops_are_dropped_with_a_warning() -> None:
    text = (
        "routes:\n  - id: r\n    path: /r\n    backends: [{url: 'http://a:80'}]\n"
        "    retry: {max: 3}\n"
        "    rate_limit: {requests_per_second: 10}\n"
    )
    result = load_config([SourceFile("gw.yaml", "sha", text.encode)])
    assert result.ok, [d.format() for d in result.diagnostics]
    warnings = {d.field: d for d in result.diagnostics if d.severity == "warning"}
    assert set(warnings) == {"routes[0].retry", "routes[0].rate_limit.requests_per_second"}
    assert all("ignored, as the gateway" in d.message for d in warnings.values())
    assert warnings["routes[0].retry"].line == 5
    (route,) = result.config.routes.values()
    assert route.model.spec.retries is None  # loaded as if the key were absent


def test_an_unknown_key_beside_a_real_error_is_still_an_error() -> None:
    text = "routes:\n  - id: r\n    path: /r\n    backends: [{url: 42}]\n    retry: {max: 3}\n"
    result = load_config([SourceFile("gw.yaml", "sha", text.encode)])
    assert not result.ok
    errors = {d.field for d in result.diagnostics if d.severity == "error"}
    assert "routes[0].retry" in errors
