"""canary-checker Canaries: every field loads as implemented, accepted or refused (with its
reason), CEL is checked at load, and the implemented fields change what a check does against
a local HTTP server as canary-checker says they do."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from agent.checks import CheckOutcome, ClientPool, run_check
from reconciler.core.agentconfig import agent_configs
from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import LoadResult, load_config
from reconciler.sitebuild import build_site
from reconciler.store.db import open_state
from reconciler.store.tokens import agent_of
from schemas.canary import UpstreamCheckTypes, effective_timeout
from tests import httpd
from tests.conftest import ConfigRepo, run_cli

CORPUS = Path(__file__).parent / "compat" / "canary_checker"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
PASSWORD = "s3cret"
REALM, NONCE = "shop", "abc123"


def load(text: str, path: str = "canary.yaml") -> LoadResult:
    return load_config([SourceFile(path, "sha-" + str(hash(text)), lambda: text.encode())])


def messages(result: LoadResult, severity: str = "error") -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity == severity]


def upstream(spec: str, name: str = "c") -> str:
    return (
        "apiVersion: canaries.flanksource.com/v1\nkind: Canary\n"
        f"metadata:\n  name: {name}\nspec:\n  schedule: '@every 1m'\n{spec}"
    )


def http_check(extra: str) -> str:
    return upstream("  http:\n    - name: web check\n      url: https://example.com/\n" + extra)


# --- loading ------------------------------------------------------------------------------


def test_the_implemented_corpus_loads_with_upstream_defaults() -> None:
    result = load((CORPUS / "implemented.yaml").read_text())
    assert result.ok, messages(result)
    canary = result.config.canaries["monitoring/shop-checks"].model
    assert canary.schedule == "@every 30s"  # interval, in seconds
    names = [check.name for _, _, check in canary.spec.checks()]
    assert "home page with basic auth" in names  # free text, spaces allowed
    dns = canary.spec.dns[0]
    assert dns.timeout == 100  # integer seconds
    assert effective_timeout(dns.timeout, 30) == 27  # capped below the schedule period
    assert effective_timeout(0, 3600) == 10  # canary-checker's default for 0
    spec = canary.resource_spec()
    assert spec["http"][4]["url"] == "http://shop.test:8080/echo"  # deprecated endpoint -> url
    assert (spec["icon"], spec["severity"], spec["owner"]) == ("shop", "critical", "team-shop")


def test_a_canary_checker_canary_without_schedule_does_not_run() -> None:
    result = load((CORPUS / "no-schedule.yaml").read_text())
    assert result.ok, messages(result)
    never = result.config.canaries["default/never-runs"].model
    assert never.schedule == "@never"
    assert never.spec.tcp[0].name == "example.com:443"  # unnamed: named by its endpoint
    assert result.config.canaries["default/paused"].model.schedule == "@never"  # replicas 0
    assert any("neither schedule nor interval" in m for m in messages(result, "warning"))
    ours = load(
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: ours\n"
        "spec:\n  tcp:\n    - name: t\n      endpoint: example.com:443\n"
    )
    assert ours.config.canaries["default/ours"].model.schedule == "@every 1m"


def test_interval_0_is_told_as_written_not_as_missing() -> None:
    """`interval: 0` is written, so the warning names it (at its line) rather than saying
    there is no interval; canary-checker runs a Canary only on a positive one."""
    text = (
        "apiVersion: canaries.flanksource.com/v1\nkind: Canary\nmetadata:\n  name: zero\n"
        "spec:\n  interval: 0\n  tcp:\n    - endpoint: example.com:443\n"
    )
    result = load(text)
    assert result.ok, messages(result)
    assert result.config.canaries["default/zero"].model.schedule == "@never"
    assert messages(result, "warning") == [
        "canary.yaml:6:3: Canary/default/zero: spec.interval: interval: 0 is no interval: "
        "canary-checker needs a positive one and does not run this canary, and neither does "
        "this project (schedule @never)"
    ]


def test_accepted_fields_give_one_notice_per_kind() -> None:
    result = load((CORPUS / "accepted.yaml").read_text())
    assert result.ok, messages(result)
    notices = messages(result, "warning")
    kinds = [m.split("accepted, not used: ")[1].split(" ")[0] for m in notices]
    assert sorted(kinds) == sorted(
        [
            "resultMode",
            "env",
            "namespace",
            "markFailOnEmpty",
            "transformDeleteStrategy",
            "responseJSONContent",
            "relationships",
            "metrics",
            "handshakeTimeout",
        ]
    )
    metrics = next(m for m in notices if "metrics (" in m)
    assert "canary.yaml:29:" in metrics and "2 places" in metrics
    spec = result.config.canaries["default/accepted-fields"].model.resource_spec()
    assert "metrics" not in spec["http"][0] and "replicas" not in spec


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ("      ntlm: true\n", "ntlm", "NTLM authentication is not implemented"),
        ("      ntlmv2: true\n", "ntlmv2", "NTLM authentication is not implemented"),
        ("      awsSigV4:\n        region: eu\n", "awsSigV4", "AWS SigV4"),
        ("      tlsConfig:\n        cert:\n          value: PEM\n", "cert", "client certificates"),
        ("      tlsConfig:\n        key:\n          value: PEM\n", "key", "client certificates"),
        (
            "      tlsConfig:\n        ca:\n          valueFrom:\n            secretKeyRef:\n"
            "              name: ca\n              key: ca.pem\n",
            "secretKeyRef",
            "needs Kubernetes",
        ),
        ("      crawl:\n        depth: 2\n", "crawl", "crawling links"),
        ("      connection: connection://http/x\n", "connection", "Mission Control"),
        ("      transform:\n        expr: '[]'\n", "transform", "result pipeline"),
        ("      dependsOn: [other]\n", "dependsOn", "run independently"),
        ("      test:\n        template: 'true'\n", "template", "use expr"),
        ("      test:\n        javascript: 'true'\n", "javascript", "JavaScript"),
        ("      display:\n        jsonPath: $.a\n", "jsonPath", "JSONPath"),
        ("      test:\n        jsonPath: $.a\n", "jsonPath", "JSONPath"),
        ("      display:\n        javascript: x\n", "javascript", "JavaScript"),
        (
            "      password:\n        valueFrom:\n          fieldRef:\n"
            "            fieldPath: metadata.name\n",
            "fieldRef",
            "needs Kubernetes",
        ),
        (
            "      username:\n        valueFrom:\n          secretKeyRef:\n            name: s\n"
            "            key: k\n",
            "secretKeyRef",
            "needs Kubernetes; use valueFrom.env",
        ),
        (
            "      headers:\n        - name: X\n          valueFrom:\n"
            "            configMapKeyRef:\n              name: c\n              key: k\n",
            "configMapKeyRef",
            "needs Kubernetes",
        ),
        (
            "      env:\n        - name: u\n          valueFrom:\n            helmRef:\n"
            "              name: h\n              key: .k\n",
            "helmRef",
            "needs Kubernetes",
        ),
        (
            "      password:\n        valueFrom:\n          serviceAccount: sa\n",
            "serviceAccount",
            "needs Kubernetes",
        ),
    ],
)
def test_a_refused_field_says_what_and_why(extra: str, field: str, reason: str) -> None:
    text = http_check(extra)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.strip().startswith(field))
    errors = messages(result := load(text))
    assert len(errors) == 1, errors
    assert f"not supported: {field} (" in errors[0] and reason in errors[0]
    assert errors[0].startswith(f"canary.yaml:{line}:"), (errors[0], line)
    assert result.config.canaries["default/c"] is not None


def test_retries_load_as_canary_checker_reads_them() -> None:
    # Canary-level retries are defaults of every check (tests/test_retries.py runs them).
    checks = "  tcp:\n    - endpoint: x:1\n      retries: {interval: 2s}\n"
    result = load(upstream("  retries:\n    maxRetries: 1\n" + checks))
    assert messages(result) == []
    spec = result.config.canaries["default/c"].model.resource_spec()
    assert spec["retries"] == {"maxRetries": 1}
    assert spec["tcp"][0]["retries"] == {"interval": "2s"}


@pytest.mark.parametrize("check_type", sorted(UpstreamCheckTypes.model_fields))
def test_a_check_type_not_run_here_names_the_supported_ones(check_type: str) -> None:
    result = load(upstream(f"  {check_type}:\n    - name: x\n"))
    errors = messages(result)
    assert errors == [
        f"canary.yaml:7:3: Canary/default/c: spec.{check_type}: check type {check_type!r} is "
        "not supported (supported: http, tcp, dns, tls, icmp, multihttp, grpc, browser)"
    ]


@pytest.mark.parametrize("field", ["username", "digest", "responseContent", "display"])
def test_no_suggestion_points_at_a_field_of_another_meaning(field: str) -> None:
    result = load(upstream(f"  dns:\n    - query: example.com\n      {field}: x\n"))
    (error,) = messages(result)
    assert f"unknown field {field!r}" in error and "did you mean" not in error


def test_a_near_typo_is_still_suggested() -> None:
    result = load(http_check("      responseCode: [200]\n"))
    assert "did you mean 'responseCodes'?" in messages(result)[0]


def test_both_endpoint_and_url_is_an_error() -> None:
    result = load(http_check("      endpoint: https://example.com/\n"))
    assert messages(result) == [
        "canary.yaml:10:7: Canary/default/c: spec.http[0].endpoint: cannot specify both "
        "endpoint and url"
    ]


# --- CEL and templates at load --------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "test:\n        expr: code == 200 && statuscode == 1",
            "undeclared reference to 'statuscode'",
        ),
        ("test:\n        expr: code in [200, 201", "does not compile: syntax error at column"),
        ("test:\n        expr: lookup(code)", "unknown function 'lookup'"),
        ("display:\n        expr: json.items.map(i, i + x)", "undeclared reference to 'x'"),
        ("display:\n        expr: outputs.a.json", "undeclared reference to 'outputs'"),
        ("display:\n        template: '{{if .code}}up{{end}}'", "not supported: Go template"),
        ("display:\n        template: '{{.code | upper}}'", "not supported: Go template function"),
        # Go's own parser refuses these: invalid, not unsupported.
        (
            "display:\n        template: '{{.code | \"a\" {{.json}}'",
            "invalid Go template: an action is not closed with }} before the next {{",
        ),
        (
            'display:\n        template: "{{.code | \\"\\n\\"}}"',
            "invalid Go template: unterminated quoted string in action",
        ),
        # Types every run has: found on sample values of the check's variables.
        (
            "test:\n        expr: code == '200'",
            "can never evaluate: '==' cannot be applied to (int, string)",
        ),
        (
            "test:\n        expr: elapsed < 5",
            "can never evaluate: '<' cannot be applied to (duration, int)",
        ),
        (
            "display:\n        expr: content + 1",
            "can never evaluate: '+' cannot be applied to (string, int)",
        ),
        ("test:\n        expr: content", "a test must give true or false; this gives a string"),
        ("test:\n        expr: code && true", "a test must give true or false; this gives an int"),
    ],
)
def test_an_expression_that_can_never_evaluate_fails_validation(block: str, message: str) -> None:
    result = load(http_check(f"      {block}\n"))
    (error,) = messages(result)
    assert error.startswith("canary.yaml:11:9: Canary/default/c: spec.http[0]."), error
    assert message in error


@pytest.mark.parametrize(
    "expr",
    [
        "json.?aggregations.logs.doc_count.orValue(0) > 0",
        "code in [200,201,301] && sslAge > Duration('7d')",
        "! ('Authorization' in json.headers.keys())",
        "string(code).charAt(0) == '2' && check.name != '' && canary.name != ''",
        "headers['Location'] == '/get' && content.contains('x') && elapsed < duration('1s')",
        # What depends on the answer is left to the run: the body's JSON may be of any type,
        # a key may be missing, a branch the sample does not take is not looked into.
        "json + 1 == 2",
        "json.authenticated == true && json.user == 'user'",
        "int(content) > 3",
        "code == 200 || content == 1",
        "code / (code - 200) == 1",
    ],
)
def test_published_expression_forms_compile(expr: str) -> None:
    result = load(http_check(f"      test:\n        expr: {json.dumps(expr)}\n"))
    assert result.ok, messages(result)


def test_validate_reports_a_broken_expression_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(http_check("      test:\n        expr: nosuch > 1\n"))
    outcome = run_cli("validate", "--repo", tmp_path, "-q")
    assert outcome.code == 1
    assert "c.yaml:11:9: Canary/default/c: spec.http[0].test.expr: undeclared reference to " in (
        outcome.err + outcome.out
    )


def test_an_unknown_url_variable_renders_as_no_value_with_a_warning() -> None:
    result = load(upstream("  http:\n    - name: n\n      url: http://$(host)/\n"))
    assert result.ok
    (warning,) = messages(result, "warning")
    assert "'host' is not a variable of env (env: none)" in warning and "<no value>" in warning


# --- behaviour against a local server ------------------------------------------------------


def _digest_ok(header: str, method: str, path: str) -> bool:
    fields = dict(part.strip().split("=", 1) for part in header.removeprefix("Digest ").split(","))
    values = {k: v.strip('"') for k, v in fields.items()}
    ha1 = hashlib.md5(f"shopper:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{path}".encode()).hexdigest()
    parts = [ha1, NONCE, values.get("nc", ""), values.get("cnonce", ""), "auth", ha2]
    return values.get("response") == hashlib.md5(":".join(parts).encode()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Basic and digest auth, a redirect, an echo; header names sent in lower case."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-served-by", "shop-1")  # lower case, as HTTP/2 servers send it
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        if self.path == "/basic":
            expected = "Basic " + base64.b64encode(f"shopper:{PASSWORD}".encode()).decode()
            if auth == expected:
                self.reply(200, b"<h1>welcome shopper</h1>")
            else:
                self.reply(401, b"who are you", **{"www-authenticate": 'Basic realm="shop"'})
        elif self.path == "/digest":
            if auth.startswith("Digest ") and _digest_ok(auth, "GET", "/digest"):
                self.reply(200, b"digest ok")
            else:
                challenge = f'Digest realm="{REALM}", nonce="{NONCE}", qop="auth"'
                self.reply(401, b"", **{"www-authenticate": challenge})
        elif self.path == "/bearer":
            self.reply(200 if auth == "Bearer tok-1" else 401, b"")
        elif self.path.startswith("/hop/"):
            left = int(self.path.rsplit("/", 1)[1])
            if left:
                self.reply(302, b"", location=f"/hop/{left - 1}")
            else:
                self.reply(200, b"arrived")
        elif self.path == "/moved":
            self.reply(301, b"", location="/new")
        else:
            self.reply(404, b"no")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/token":
            client = "Basic " + base64.b64encode(f"shop-client:{PASSWORD}".encode()).decode()
            form = parse_qs(body.decode())
            expected = {"grant_type": ["client_credentials"], "scope": ["read write"]}
            if self.headers.get("Authorization") == client and form == expected | {
                "audience": ["shop"]
            }:
                self.reply(200, b'{"access_token": "tok-1", "token_type": "bearer"}')
            else:
                self.reply(401, b'{"error": "invalid_client"}')
            return
        self.reply(200, body, **{"content-type": "application/json"})


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with httpd.serving(Handler) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


def _run_all(checks: list[dict[str, Any]]) -> dict[str, CheckOutcome]:
    async def main() -> dict[str, CheckOutcome]:
        async with ClientPool(size=2, trust_env=False) as pool:
            outcomes = [await run_check(check, pool, lambda: NOW) for check in checks]
        return {check["name"]: outcome for check, outcome in zip(checks, outcomes, strict=True)}

    return asyncio.run(main())


def served_checks(
    text: str, environment: dict[str, str], types: tuple[str, ...] = ("http", "tcp")
) -> list[dict[str, Any]]:
    result = load(text)
    assert result.ok, messages(result)
    desired = compile_config(result.config)
    config = agent_configs(desired.resources.values(), environment)["local"]
    assert not config.problems, config.problems
    (canary,) = orjson.loads(config.body)["canaries"]
    return [check for check in canary["checks"] if check["type"] in types]


def test_what_the_agent_receives_is_resolved(target: str) -> None:
    text = (CORPUS / "implemented.yaml").read_text().replace("shop.test:8080", target)
    checks = {
        c["name"]: c for c in served_checks(text, {"SHOP_PASSWORD": PASSWORD}, ("http", "dns"))
    }
    assert checks["resolver answers"]["timeout_ms"] == 27_000  # 100 s, capped below @every 30s
    url = checks["credentials in the url"]
    assert url["url"] == f"http://shopper:{PASSWORD}@{target}/basic" and "env" not in url
    body = json.loads(checks["templated order"]["body"])
    assert body == {"sku": "ABC-1", "canary": "shop-checks", "check": "templated order"}
    assert checks["home page with basic auth"]["password"] == PASSWORD
    assert checks["templated order"]["canary"] == {"name": "shop-checks", "namespace": "monitoring"}
    assert checks["plain http has no certificate"]["tlsConfig"] == {"insecureSkipVerify": True}


def test_a_tls_config_ca_is_read_from_the_environment() -> None:
    text = http_check(
        "      tlsConfig:\n        ca:\n          valueFrom:\n            env: CA_PEM\n"
    )
    (check,) = served_checks(text, {"CA_PEM": "-----BEGIN CERTIFICATE-----"}, ("http",))
    assert check["tlsConfig"] == {"insecureSkipVerify": False, "ca": "-----BEGIN CERTIFICATE-----"}


def test_the_implemented_fields_act_as_canary_checker_says(target: str) -> None:
    text = (CORPUS / "implemented.yaml").read_text().replace("shop.test:8080", target)
    checks = served_checks(text, {"SHOP_PASSWORD": PASSWORD})
    outcomes = _run_all(checks)
    status = {name: (o.status, o.message) for name, o in outcomes.items()}
    # display gives the message; the header name is Go's canonical form of what was sent
    assert status["home page with basic auth"] == ("pass", "status=200, by shop-1")
    # the password of user:password@ authenticates but is not in the reported endpoint
    assert status["credentials in the url"] == ("pass", f"http://{target}/basic")
    assert status["digest login"][0] == "pass"
    assert status["oauth2 client credentials"][0] == "pass"  # bearer token from /token
    assert status["templated order"] == ("pass", "ordered ABC-1 in 200")
    assert status["redirect not followed"][0] == "pass"
    assert status["plain http has no certificate"] == (
        "fail",
        "no certificate found to check its expiry (maxSSLExpiry)",
    )
    assert status["shop port"] == ("pass", "Success")  # tcp display.template
    assert status["shop port within a minute"] == ("pass", f"connected to {target}")


def test_without_the_secret_the_auth_fails_and_content_is_checked(target: str) -> None:
    text = (CORPUS / "implemented.yaml").read_text().replace("shop.test:8080", target)
    checks = served_checks(text, {"SHOP_PASSWORD": "wrong"})
    wanted = ("home page with basic auth", "oauth2 client credentials")
    outcome = _run_all([c for c in checks if c["name"] in wanted])
    token = outcome["oauth2 client credentials"]
    assert (token.status, token.message) == (
        "error",
        f"TokenError: token request to http://{target}/token answered 401",
    )
    result = outcome["home page with basic auth"]
    assert result.status == "fail"
    assert "status code 401 is not one of the accepted codes [200]" in (result.message or "")
    assert "expected the body to contain 'welcome shopper'" in (result.message or "")


def test_a_missing_environment_variable_stops_only_that_canary(target: str) -> None:
    text = (CORPUS / "implemented.yaml").read_text().replace("shop.test:8080", target)
    result = load(text)
    desired = compile_config(result.config)
    config = agent_configs(desired.resources.values(), {})["local"]
    assert config.problems and "environment variable SHOP_PASSWORD is not set" in config.problems[0]


# --- agentSelector details as canary-checker ------------------------------------------------

FLEET = """
apiVersion: canary-reconciler/v1
kind: Region
metadata: {name: eu-west}
---
apiVersion: canary-reconciler/v1
kind: Agent
metadata: {name: eu-west.prod-1}
spec: {region: eu-west}
---
apiVersion: canary-reconciler/v1
kind: Agent
metadata: {name: eu-west.staging-1}
spec: {region: eu-west}
"""


def test_dotted_agent_names_are_selected_ignoring_case_and_spaces() -> None:
    canary = upstream(
        "  agentSelector: [' EU-WEST.* ', '! *.Staging-1']\n"
        "  tcp:\n    - endpoint: example.com:443\n"
    )
    result = load(FLEET + "---\n" + canary)
    assert result.ok, messages(result)
    desired = compile_config(result.config)
    derived = sorted(a for a in desired.resources if a.startswith("derived_canary."))
    assert derived == ["derived_canary.default/c@eu-west.prod-1"]


def test_a_dotted_agent_name_survives_its_token() -> None:
    token = "cra_eu-west.prod-1." + "A" * 43
    assert agent_of(token) == "eu-west.prod-1"


@pytest.mark.parametrize("name", ["eu-west..prod", ".eu", "eu.", "EU-west.prod", "eu_west"])
def test_an_agent_name_must_still_be_a_kubernetes_name(name: str) -> None:
    result = load(FLEET.replace("eu-west.prod-1", name, 1))
    assert any("is not a valid agent name" in m for m in messages(result)), messages(result)


def test_validate_and_plan_print_one_notice_per_accepted_field_kind(tmp_path: Path) -> None:
    (tmp_path / "accepted.yaml").write_text((CORPUS / "accepted.yaml").read_text())
    for command in ("validate", "plan"):
        outcome = run_cli(command, "--repo", tmp_path, "-q")
        assert outcome.code == 0, outcome
        lines = [line for line in outcome.out.splitlines() if "accepted, not used: metrics" in line]
        assert len(lines) == 1, (command, outcome.out)
        assert lines[0].startswith("Warning: accepted.yaml:29:7: Canary/default/accepted-fields:")


# --- presentation fields on the site --------------------------------------------------------


def test_owner_severity_icon_description_and_labels_show_on_the_canary_page(
    tmp_path: Path,
) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.write(
        "shop.yaml",
        upstream(
            "  owner: team-shop\n  severity: critical\n  icon: cart\n"
            "  http:\n    - name: home page\n      url: https://shop.example/\n"
            "      description: The shop's front door\n      icon: http\n"
            "      labels: {tier: frontend}\n",
            name="shop",
        ),
    )
    repo.commit("shop")
    state = tmp_path / "state.duckdb"
    applied = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve", "-q")
    assert applied.code == 0, applied.err
    connection = open_state(state)
    assert connection is not None
    with connection:
        build_site(connection, tmp_path / "site", NOW)
    page = (tmp_path / "site" / "canary" / "default.shop.html").read_text()
    assert "Owner: team-shop; Severity: critical; Icon: cart." in page
    assert "<code>home page</code>: The shop&#39;s front door" in page
    assert "(tier=frontend)" in page and "icon http" in page


@pytest.mark.parametrize(("limit", "status"), [(2, "fail"), (3, "pass")])
def test_max_redirects_counts_the_redirects_followed(target: str, limit: int, status: str) -> None:
    check = {"name": "hops", "type": "http", "timeout_ms": 5000}
    check |= {"url": f"http://{target}/hop/3", "maxRedirects": limit}
    outcome = _run_all([check])["hops"]
    assert outcome.status == status, outcome.message
    if status == "fail":
        assert outcome.message == "followed 3 redirects, more than maxRedirects 2"


def test_a_value_that_breaks_the_template_stops_only_its_canary() -> None:
    broken = upstream(
        "  http:\n    - name: n\n      url: http://$(host)/\n      env:\n"
        "        - name: host\n          valueFrom:\n            env: ODD_HOST\n",
        name="odd",
    )
    fine = upstream("  tcp:\n    - endpoint: example.com:443\n", name="fine")
    result = load(broken + "\n---\n" + fine)
    assert result.ok, messages(result)
    config = agent_configs(compile_config(result.config).resources.values(), {"ODD_HOST": "{{"})
    local = config["local"]
    assert [c["id"] for c in orjson.loads(local.body)["canaries"]] == ["default/fine@local"]
    assert "cannot render the template" in local.problems[0]
