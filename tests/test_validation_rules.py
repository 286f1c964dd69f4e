"""Every validation rule: a broken document gives an error naming its file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_cli

VALID_BASE = """
apiVersion: canary-reconciler/v1
kind: Region
metadata:
  name: eu
---
apiVersion: canary-reconciler/v1
kind: Agent
metadata:
  name: eu-1
spec:
  region: eu
"""


ROUTE_HEAD = """\
apiVersion: canary-reconciler/v1
kind: Route
metadata:
  name: api
spec:
  path: /api
"""

SPLIT = """\
  traffic_split:
    - name: stable
      weight: 90
      backends: [{url: 'http://v1:8080'}]
    - name: canary
      weight: 10
      backends: [{url: 'http://v2:8080'}]
"""


def route(split: str = SPLIT, canary: str = "") -> str:
    """A route document; `canary` lines are indented under spec.canary."""
    block = "  canary:\n" + textwrap.indent(textwrap.dedent(canary).strip("\n"), "    ") + "\n"
    return ROUTE_HEAD + split + (block if canary else "")


def analysis(line: str) -> str:
    return route(canary=f"canary_group: canary\nsteps: [{{weight: 10}}]\nanalysis:\n  {line}")


def canary(body: str, schedule: str = "'@every 30s'") -> str:
    return (
        textwrap.dedent(
            f"""
    apiVersion: canary-reconciler/v1
    kind: Canary
    metadata:
      name: web
    spec:
      schedule: {schedule}
      agentSelector: ['*']
    """
        )
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
        + "\n"
    )


CASES: dict[str, tuple[str, str, str]] = {
    # name: (document with the bad line marked '#!', expected field, expected message part)
    "canary needs a traffic_split": (
        ROUTE_HEAD + "  traffic_split: []\n  canary:  #!\n    canary_group: canary\n"
        "    steps: [{weight: 5}]\n",
        "spec.canary",
        "a canary needs a traffic_split on the route",
    ),
    "canary needs a traffic_split (absent)": (
        textwrap.dedent(
            """
            apiVersion: canary-reconciler/v1
            kind: Route
            metadata:
              name: api
            spec:
              path: /api
              canary:  #!
                canary_group: canary
                steps: [{weight: 10}]
            """
        ),
        "spec.canary",
        "needs a traffic_split",
    ),
    "canary_group must be a group": (
        route(canary="canary_group: canry  #!\nsteps: [{weight: 10}]"),
        "spec.canary.canary_group",
        "'canry' is not a traffic_split group",
    ),
    "at least one step": (
        route(canary="canary_group: canary\nsteps: []  #!"),
        "spec.canary.steps",
        "at least one step",
    ),
    "step weight at most 100": (
        route(canary="canary_group: canary\nsteps:\n  - weight: 101  #!"),
        "spec.canary.steps[0].weight",
        "less than or equal to 100",
    ),
    "step weight at least 0": (
        route(canary="canary_group: canary\nsteps:\n  - weight: -1  #!"),
        "spec.canary.steps[0].weight",
        "greater than or equal to 0",
    ),
    "step weights must not decrease": (
        route(canary="canary_group: canary\nsteps:\n  - weight: 50\n  - weight: 20  #!"),
        "spec.canary.steps[1].weight",
        "must not decrease (50 then 20)",
    ),
    "error_threshold within 0-1": (
        analysis("error_threshold: 1.5  #!"),
        "spec.canary.analysis.error_threshold",
        "less than or equal to 1",
    ),
    "interval not negative": (
        analysis("interval: -5s  #!"),
        "spec.canary.analysis.interval",
        "invalid duration",
    ),
    "max_error_rate_increase not negative": (
        analysis("max_error_rate_increase: -1.0  #!"),
        "spec.canary.analysis.max_error_rate_increase",
        "greater than or equal to 0",
    ),
    "max_latency_increase not negative": (
        analysis("max_latency_increase: -2.0  #!"),
        "spec.canary.analysis.max_latency_increase",
        "greater than or equal to 0",
    ),
    "max_failures not negative": (
        analysis("max_failures: -1  #!"),
        "spec.canary.analysis.max_failures",
        "greater than or equal to 0",
    ),
    "traffic split sums to 100": (
        route(split=SPLIT.replace("weight: 90", "weight: 80").replace("split:", "split:  #!")),
        "spec.traffic_split",
        "sum to 90; they must sum to 100",
    ),
    "names are slugs": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: EU_West  #!\n",
        "metadata.name",
        "is not a valid name",
    ),
    "an agent's region exists": (
        "apiVersion: canary-reconciler/v1\nkind: Agent\nmetadata:\n  name: us-1\n"
        "spec:\n  region: us-east  #!\n",
        "spec.region",
        "region 'us-east' does not exist",
    ),
    "schedule parses": (
        canary("http:\n  - name: home\n    url: https://example.com/", "'61 * * * *'  #!"),
        "spec.schedule",
        "minute value 61 out of range 0-59",
    ),
    "timeout shorter than the schedule period": (
        canary("http:\n  - name: home\n    url: https://example.com/\n    timeout: 30s  #!"),
        "spec.http[0].timeout",
        "must be shorter than the schedule period (30s)",
    ),
    "unknown keys are errors": (
        canary("http:\n  - name: home\n    url: https://example.com/\n    responseCode: [200]  #!"),
        "spec.http[0].responseCode",
        "did you mean 'responseCodes'?",
    ),
    "check names are unique": (
        canary(
            "http:\n  - name: home\n    url: https://example.com/\n"
            "tcp:\n  - name: home  #!\n    endpoint: example.com:443"
        ),
        "spec.tcp[0].name",
        "already used by a http check",
    ),
    "a canary has a check": (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: web\n"
        "spec:  #!\n  schedule: '@every 1m'\n",
        "spec",
        "needs at least one check",
    ),
    "endpoints are host:port": (
        canary("tcp:\n  - name: db\n    endpoint: db.example.com  #!"),
        "spec.tcp[0].endpoint",
        "is not host:port",
    ),
    "a header has value or valueFrom": (
        canary(
            "http:\n  - name: home\n    url: https://example.com/\n    headers:\n"
            "      - name: X-Token  #!\n"
        ),
        "spec.http[0].headers[0]",
        "exactly one of 'value' and 'valueFrom'",
    ),
    "incidentPolicy is a known policy": (
        canary("incidentPolicy: most  #!\nhttp:\n  - name: home\n    url: https://example.com/"),
        "spec.incidentPolicy",
        "expected 'any', 'majority', 'all' or {count: N}",
    ),
    "'local' is reserved": (
        "apiVersion: canary-reconciler/v1\nkind: Agent\nmetadata:\n  name: local  #!\n"
        "spec:\n  region: eu\n",
        "metadata.name",
        "reserved for the control plane",
    ),
    "unknown kind": (
        "apiVersion: canary-reconciler/v1\nkind: Probe  #!\nmetadata:\n  name: x\n",
        "kind",
        "unknown kind 'Probe'",
    ),
    "unknown apiVersion": (
        "apiVersion: canary-reconciler/v2  #!\nkind: Region\nmetadata:\n  name: x\n",
        "apiVersion",
        "unknown apiVersion",
    ),
    "duplicate YAML keys": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: x\n"
        "metadata:  #!\n  name: y\n",
        "",
        "duplicate key 'metadata' (first set on line 3)",
    ),
    "YAML syntax": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata: name: x  #!\n",
        "",
        "invalid YAML: mapping values are not allowed",
    ),
    "required fields": (
        "apiVersion: canary-reconciler/v1\nkind: Agent\nmetadata:\n  name: x\nspec:  #!\n"
        "  enabled: true\n",
        "spec.region",
        "required field is missing",
    ),
    "http url port in range": (
        canary("http:\n  - name: home\n    url: https://example.com:70000/  #!"),
        "spec.http[0].url",
        "'https://example.com:70000/': the port must be a number from 1 to 65535",
    ),
    "http url port not 0": (
        canary("http:\n  - name: home\n    url: https://example.com:0/  #!"),
        "spec.http[0].url",
        "the port must be a number from 1 to 65535",
    ),
    "http url has a host": (
        canary("http:\n  - name: home\n    url: 'https://:443/'  #!"),
        "spec.http[0].url",
        "'https://:443/' has no host",
    ),
    "http url brackets": (
        canary("http:\n  - name: home\n    url: 'http://[::1/'  #!"),
        "spec.http[0].url",
        "is not a URL (Invalid IPv6 URL)",
    ),
    "multihttp url port, variables left as written": (
        canary(
            "multihttp:\n  - name: flow\n    entries:\n      - request:\n"
            "          url: 'http://${host}:abc/x'  #!\n"
        ),
        "spec.multihttp[0].entries[0].request.url",
        "'http://${host}:abc/x': the port must be a number from 1 to 65535",
    ),
    "route backend port in range": (
        route(
            split=SPLIT.replace("http://v2:8080", "http://v2:99999").replace(
                "      backends: [{url: 'http://v2:99999'}]",
                "      backends: [{url: 'http://v2:99999'}]  #!",
            )
        ),  # fmt: skip
        "spec.traffic_split[1].backends[0].url",
        "'http://v2:99999': the port must be a number from 1 to 65535",
    ),
    "route path percent-encoded": (
        route().replace("path: /api", "path: /caf%C3%A9  #!"),
        "spec.path",
        "'%C3' is percent-encoding: nginx matches the decoded request path, so this route "
        "would take only requests for '/caf%25C3%25A9', not '/caf%C3%A9'; write the path "
        "decoded: '/café'",
    ),
    "route path percent-encoding a space": (
        route().replace("path: /api", "path: /a%20b  #!"),
        "spec.path",
        "decoded, it reads '/a b', which a route path cannot hold (whitespace)",
    ),
    "route path with a '..' segment": (
        route().replace("path: /api", "path: /a/../b  #!"),
        "spec.path",
        "a '..' segment in '/a/../b': nginx resolves '.' and '..' segments and merges "
        "repeated slashes in a request path before matching it, so no request reaches this "
        "path; write '/b'",
    ),
    "route path with a '.' segment": (
        route().replace("path: /api", "path: /a/./b/  #!"),
        "spec.path",
        "a '.' segment in '/a/./b/'",
    ),
    "route path with '//'": (
        route().replace("path: /api", "path: /a//b  #!"),
        "spec.path",
        "'//' in '/a//b': nginx resolves",
    ),
    "route path with a control character": (
        route().replace("path: /api", 'path: "/a\\x1cb"  #!'),
        "spec.path",
        "the path holds the control character U+001C (at index 2), most likely from a YAML "
        "escape: a client sends one only percent-encoded, and a route path takes printable "
        "characters only; remove it",
    ),
    "route path with DEL": (
        route().replace("path: /api", 'path: "/a\\x7f"  #!'),
        "spec.path",
        "control character U+007F",
    ),
    "route path with NUL": (
        route().replace("path: /api", 'path: "/a\\0b"  #!'),
        "spec.path",
        "the path holds a NUL character (U+0000): nginx answers 400 to every request path "
        "with one (%00), so no request reaches this route; remove it",
    ),
    "a document that is not a mapping, at its own line": (
        "# a comment\n---\nhello  #!\n",
        "",
        "expected a mapping with apiVersion and kind, got a string",
    ),
    "kind is missing": (
        "apiVersion: canary-reconciler/v1  #!\nmetadata:\n  name: x\n",
        "kind",
        "kind is missing (expected one of: Agent, AlertRouting, Canary,",
    ),
    "values are shown as the YAML wrote them": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: eu\nspec:\n"
        "  displayName: true  #!\n",
        "spec.displayName",
        "Input should be a valid string (got a boolean: true)",
    ),
    "dates are shown as written": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: eu\nspec:\n"
        "  enabled: 2020-01-01  #!\n",
        "spec.enabled",
        "Input should be a valid boolean (got a date: 2020-01-01)",
    ),
    "a spec is a mapping of fields": (
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: eu\nspec: 5  #!\n",
        "spec",
        "Input should be a mapping of fields (got a number: 5)",
    ),
    "gateway route ids are slugs": (
        "routes:\n  - id: Bad Id  #!\n    path: /x\n",
        "routes[0].id",
        "is not a valid name",
    ),
}


def _marked_line(text: str) -> int:
    lines = text.lstrip("\n").splitlines()
    [line] = [number for number, content in enumerate(lines, 1) if "#!" in content]
    return line


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_reports_file_line_and_field(case: str, tmp_path: Path) -> None:
    text, field, message = CASES[case]
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    broken = tmp_path / "team" / "broken.yaml"
    broken.parent.mkdir()
    broken.write_text(text.lstrip("\n"))

    result = run_cli("validate", "--repo", tmp_path, "-q")

    assert result.code == 1
    line = _marked_line(text)
    expected_start = f"team/broken.yaml:{line}:"
    errors = [row for row in result.out.splitlines() if row.startswith("Error: ")]
    matching = [row for row in errors if row.removeprefix("Error: ").startswith(expected_start)]
    assert matching, f"no error at {expected_start} in:\n{result.out}"
    assert any(f": {field}: " in row or not field for row in matching), matching
    assert any(message in row for row in matching), matching
    assert "base.yaml" not in result.out


def test_all_errors_of_a_load_are_reported_together(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(
            f"apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: {name.upper()}\n"
        )
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 1
    assert [row.split(":")[1] for row in result.out.splitlines() if "Error:" in row] == [
        " a.yaml",
        " b.yaml",
        " c.yaml",
    ]


def test_duplicate_documents_name_both_places(tmp_path: Path) -> None:
    region = "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: eu\n"
    (tmp_path / "one.yaml").write_text(region)
    (tmp_path / "two.yaml").write_text("# another copy\n" + region)
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 1
    assert "two.yaml:5:3: Region/eu: metadata.name: Region/eu is already defined at one.yaml:4" in (
        result.out
    )


def test_valid_repo_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 0, result.out
    assert "valid" in result.out


def test_a_union_field_reports_what_is_wrong_once_without_pydantic_tags(tmp_path: Path) -> None:
    body = """
    dns:
      - {query: example.com, timeout: 100000}
      - {query: example.org, timeout: '0s'}
    """
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    (tmp_path / "dns.yaml").write_text(canary(body).lstrip("\n"))
    result = run_cli("validate", "--repo", tmp_path)
    assert result.code == 1
    errors = [line for line in result.out.splitlines() if "dns.yaml:" in line]
    assert len(errors) == 2, errors
    assert "spec.dns[0].timeout: Input should be less than or equal to 3600" in errors[0]
    assert "spec.dns[1].timeout: timeout '0s' is out of range: allowed 1ms to 1h" in errors[1]


def test_two_routes_taking_the_same_requests_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    (tmp_path / "api.yaml").write_text(
        route().replace("  path: /api\n", "  path: /api\n  path_prefix: true\n")
    )
    (tmp_path / "exact.yaml").write_text(route().replace("name: api", "name: api-root"))
    (tmp_path / "slash.yaml").write_text(
        route().replace("name: api", "name: api-tree").replace(
            "  path: /api\n", "  path: /api/\n  path_prefix: true\n")
    )  # fmt: skip
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 1
    errors = [row for row in result.out.splitlines() if ".yaml:" in row]
    assert errors == [
        "Error: exact.yaml:6:3: Route/api-root: spec.path: the path '/api' is routed by "
        "Route/api already (api.yaml:6); a request must have one route",
        "Error: slash.yaml:6:3: Route/api-tree: spec.path: every path under '/api/' is routed "
        "by Route/api already (api.yaml:6); a request must have one route",
    ]
    (tmp_path / "api.yaml").unlink()  # '/api' exactly and '/api/…' are different requests
    assert run_cli("validate", "--repo", tmp_path, "-q").code == 0


def test_what_a_tester_found_refused_wrongly_loads(tmp_path: Path) -> None:
    """A gateway data-plane node's file (listeners, no routes) is a document, not an empty
    file; an http or multihttp URL may hold `${env:NAME}`; a route on another's path that
    nginx never serves (it restricts methods: not driven) is left to the gateway, which tells
    them apart."""
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    (tmp_path / "node.yaml").write_text(
        "listeners:\n  - id: http\n    address: ':8080'\n    protocol: http\n"
    )
    (tmp_path / "web.yaml").write_text(
        canary("http:\n  - name: home\n    url: 'https://${env:API_HOST}/health'")
    )
    (tmp_path / "flow.yaml").write_text(
        canary(
            "multihttp:\n  - name: flow\n    entries:\n      - request:\n"
            "          url: 'https://${env:API_HOST}/x'\n"
        ).replace("name: web", "name: flow")
    )
    (tmp_path / "api.yaml").write_text(route())
    (tmp_path / "api-posts.yaml").write_text(
        route().replace("name: api", "name: api-posts") + "  methods: [POST]\n"
    )
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 0, result.out
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "node.yaml").write_text((tmp_path / "node.yaml").read_text())
    assert run_cli("validate", "--repo", alone, "-q").code == 0


def test_route_paths_nginx_matches_as_written_load(tmp_path: Path) -> None:
    """A `%` without two hex digits is a literal `%`, and `.b` or `...` is no dot segment, so
    these paths load; a gateway file's path is the gateway project's: its router matches the
    decoded request path without resolving `..` or `//`, so such a route there still loads."""
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    for name, path in (("pct", "/100%"), ("dots", "/a/.b/..c/.../"), ("utf", "/café")):
        (tmp_path / f"{name}.yaml").write_text(
            route().replace("name: api", f"name: {name}").replace("path: /api", f"path: {path}")
        )
    (tmp_path / "gateway.yaml").write_text(
        "routes:\n"
        + "".join(
            f"  - id: {name}\n    path: {path}\n    backends: [{{url: 'http://v1:8080'}}]\n"
            for name, path in (("up", "/a/../b"), ("double", "/a//b"), ("space", "/a%20b"))
        )
    )
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 0, result.out


def _broken_file_errors(tmp_path: Path, text: str) -> list[str]:
    """The error rows `validate` prints for `team/broken.yaml` beside a valid base."""
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    broken = tmp_path / "team" / "broken.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(text.lstrip("\n"))
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 1, result.out
    return [row for row in result.out.splitlines() if row.startswith("Error: ")]


DEGRADED = (
    "4000 must be lower than thresholdMillis (800): a run slower than thresholdMillis fails, so "
    "it could never be degraded"
)


def test_a_field_error_does_not_hide_the_cross_field_errors_of_its_check(tmp_path: Path) -> None:
    """A check's cross-field rule (degradedThresholdMillis below thresholdMillis) is reported
    beside a type error of another of its fields, each once, at its own line and in the
    words it has alone."""
    check = """
    http:
      - name: home
        url: https://example.com/
        responseCodes: [{codes}]
        thresholdMillis: 800
        degradedThresholdMillis: 4000
    """
    alone = _broken_file_errors(tmp_path, canary(check.format(codes="200")))
    assert alone == [
        "Error: team/broken.yaml:13:7: Canary/default/web: spec.http[0].degradedThresholdMillis: "
        + DEGRADED
    ]

    both = _broken_file_errors(tmp_path, canary(check.format(codes="yes")))

    assert both == [
        "Error: team/broken.yaml:11:23: Canary/default/web: spec.http[0].responseCodes[0]: "
        "Input should be a valid integer (got a boolean: true)",
        *alone,
    ]


def test_a_rule_needing_a_field_that_failed_is_skipped(tmp_path: Path) -> None:
    """Its input is unknown: degradedThresholdMillis is not compared with a thresholdMillis
    that is not a number, a url that is not a string is not called missing, nor is the name
    a check would take from an endpoint that is not a string. The other checks' rules run."""
    body = """
    http:
      - name: home
        url: [https://example.com/]
        thresholdMillis: '800'
        degradedThresholdMillis: 4000
    tcp:
      - endpoint: 5432
      - endpoint: db.example.com
    """
    errors = _broken_file_errors(tmp_path, canary(body))
    assert [row.split(": ", 4)[3:] for row in errors] == [
        ["spec.http[0].url", "Input should be a valid string (got a list: "
         "['https://example.com/'])"],
        ["spec.http[0].thresholdMillis", "Input should be a valid integer (got a string: '800')"],
        ["spec.tcp[0].endpoint", "Input should be a valid string (got a number: 5432)"],
        ["spec.tcp[1].endpoint", "'db.example.com' is not host:port (e.g. 'db.example.com:5432')"],
    ]  # fmt: skip


def test_field_errors_and_rules_of_other_places_and_kinds_come_in_one_run(tmp_path: Path) -> None:
    """The same for rules across checks (unique names), refused fields, a check's rules
    after one needing a field that failed, and other kinds."""
    body = """
    http:
      - name: home
        url: https://example.com/
        responseCodes: [yes]
        dependsOn: [other]
      - name: slow
        url: https://example.com/slow
        retries: 1
        thresholdMillis: 800
        degradedThresholdMillis: 4000
    tcp:
      - name: home
        endpoint: db.example.com:5432
    """
    route_text = route(SPLIT.replace("weight: 90", "weight: 80")) + "  path_prefix: 'yes'\n"
    errors = _broken_file_errors(tmp_path, canary(body) + "---\n" + route_text)
    assert [row.split(": ", 4)[3:] for row in errors] == [
        ["spec.http[0].responseCodes[0]", "Input should be a valid integer (got a boolean: true)"],
        ["spec.http[0].dependsOn", "not supported: dependsOn (the checks of a canary run "
         "independently here)"],
        ["spec.http[1].retries", "Input should be a mapping of fields (got a number: 1)"],
        ["spec.http[1].degradedThresholdMillis", DEGRADED],
        ["spec.tcp[0].name", "check name 'home' is already used by a http check"],
        ["spec.traffic_split", "group weights sum to 90; they must sum to 100"],
        ["spec.path_prefix", "Input should be a valid boolean (got a string: 'yes')"],
    ]  # fmt: skip


def _validate_lines(tmp_path: Path, body: str, schedule: str = "'@every 30s'") -> list[str]:
    """`validate`'s warnings and notices for a canary of `body` beside a valid base."""
    (tmp_path / "base.yaml").write_text(VALID_BASE.lstrip("\n"))
    (tmp_path / "web.yaml").write_text(canary(body, schedule).lstrip("\n"))
    result = run_cli("validate", "--repo", tmp_path, "-q")
    assert result.code == 0, result.out
    return [row for row in result.out.splitlines() if row.startswith(("Warning:", "Notice:"))]


def test_follow_redirects_true_beside_max_redirects_0_is_a_warning(tmp_path: Path) -> None:
    """The agent follows no redirect at maxRedirects 0, whatever followRedirects says: a
    written `followRedirects: true` beside it is said to have no effect."""
    check = "http:\n  - name: home\n    url: https://example.com/\n    maxRedirects: 0\n"
    assert _validate_lines(tmp_path, check + "    followRedirects: true\n") == [
        "Warning: web.yaml:11:7: Canary/default/web: spec.http[0].maxRedirects: 0 follows no "
        "redirect, so followRedirects: true has no effect (a 3xx is the result); write "
        "followRedirects: false, or a maxRedirects above 0"
    ]
    assert _validate_lines(tmp_path, check) == []  # followRedirects not written
    assert _validate_lines(tmp_path, check + "    followRedirects: false\n") == []


def test_a_dns_integer_timeout_the_schedule_caps_is_a_notice(tmp_path: Path) -> None:
    """canary-checker's integer seconds load (a duration would be an error), capped at 90 %
    of the schedule period as the agent is sent them: validate says so."""
    dns = "dns:\n  - name: mx\n    query: example.com\n    timeout: {}\n"
    assert _validate_lines(tmp_path, dns.format(60)) == [
        "Notice: web.yaml:11:7: Canary/default/web: spec.dns[0].timeout: timeout 60 (1m) is "
        "capped at 27s, 90 % of the schedule period (30s): runs of one canary never overlap"
    ]
    assert _validate_lines(tmp_path, dns.format(0), "'@every 5s'") == [
        "Notice: web.yaml:11:7: Canary/default/web: spec.dns[0].timeout: timeout 0 (10s) is "
        "capped at 4.5s, 90 % of the schedule period (5s): runs of one canary never overlap"
    ]
    assert _validate_lines(tmp_path, dns.format(27)) == []
    assert _validate_lines(tmp_path, dns.format(60), "'@never'") == []


def test_an_agent_in_a_region_whose_document_failed_is_not_told_the_region_is_missing(
    tmp_path: Path,
) -> None:
    """The Region's own error says what is wrong; a second error on every Agent in it,
    saying the region does not exist, would send the reader to the wrong file."""
    (tmp_path / "fleet.yaml").write_text(
        "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata: {name: eu}\n"
        "spec: {enabled: maybe}\n---\n"
        "apiVersion: canary-reconciler/v1\nkind: Agent\nmetadata: {name: eu-1}\n"
        "spec: {region: eu}\n"
    )
    result = run_cli("validate", "--repo", tmp_path, "-q")
    errors = [row for row in result.out.splitlines() if row.startswith("Error: fleet")]
    assert result.code == 1 and len(errors) == 1, result.out
    assert "Region/eu: spec.enabled" in errors[0]
