"""Check models of a Canary (HTTP, TCP, DNS, TLS, ICMP, multi-step HTTP, gRPC health,
browser) and the values they reference."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    model_validator,
)

from schemas.base import (
    Duration,
    HeaderName,
    HeaderValue,
    Problem,
    StrictModel,
    Timeout,
    url_problem,
)
from schemas.compat import NEEDS_KUBERNETES, accepted, refused
from schemas.durations import parse_duration
from schemas.limits import MAX_TIMEOUT_SECONDS
from schemas.partial import UNKNOWN, UnknownValue
from schemas.wire import MAX_RETRIES

MAX_CHECK_NAME = 128
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_SCHEDULE = "@every 1m"
NEVER = "@never"
# canary-checker's DNS check waits 10 seconds when its integer `timeout` is 0 or absent.
DNS_DEFAULT_TIMEOUT_SECONDS = 10

CheckName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CHECK_NAME,
        description="Free text, unique within the canary. Default: the description, "
        "else the URL, endpoint or query.",
    ),
]


class ValueFrom(StrictModel):
    """Where a secret value comes from at serve time. It is never stored in git or DuckDB."""

    env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable of the control plane.",
    )
    secretKeyRef: Any = refused(NEEDS_KUBERNETES)
    configMapKeyRef: Any = refused(NEEDS_KUBERNETES)
    helmRef: Any = refused(NEEDS_KUBERNETES)
    serviceAccount: Any = refused(NEEDS_KUBERNETES)
    fieldRef: Any = refused(NEEDS_KUBERNETES)

    def problems(self) -> Iterator[Problem]:
        written = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if not written:
            yield ((), "set 'env' (the name of an environment variable of the control plane)")


class SecretValue(StrictModel):
    """A value written inline (`${env:NAME}` allowed) or read from the environment."""

    name: str | None = Field(default=None, description="Ignored here (canary-checker's EnvVar).")
    value: str | None = None
    valueFrom: ValueFrom | None = None

    def problems(self) -> Iterator[Problem]:
        if (self.value is None) == (self.valueFrom is None):
            yield ((), "set exactly one of 'value' and 'valueFrom'")
        if self.valueFrom is not None:
            for path, message in self.valueFrom.problems():
                yield (("valueFrom", *path), message)


class Header(SecretValue):
    """One HTTP request header; `value` may contain `${env:NAME}` references."""

    name: HeaderName
    value: HeaderValue | None = None


class EnvVar(SecretValue):
    """A variable for `$(NAME)` in the URL and `{{.NAME}}` in a templated body."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class OAuth2(StrictModel):
    """OAuth2 client credentials: `username` is the client id, `password` its secret."""

    tokenURL: str = Field(pattern=r"^https?://\S+$", description="Where tokens are requested.")
    scope: list[str] | None = Field(default=None, description="Scopes asked for.")
    params: dict[str, str] | None = Field(
        default=None, description="Extra form fields of the token request."
    )


class TlsConfig(StrictModel):
    """TLS settings of one HTTP check (canary-checker's tlsConfig)."""

    insecureSkipVerify: bool | None = Field(
        default=None, description="Do not verify the server's certificate chain and name."
    )
    ca: SecretValue | None = Field(
        default=None, description="PEM certificates to trust besides the system's."
    )
    handshakeTimeout: Any = accepted("the check's timeout bounds the handshake")
    cert: Any = refused("client certificates are not implemented")
    key: Any = refused("client certificates are not implemented")

    def problems(self) -> Iterator[Problem]:
        yield from _nested("ca", self.ca)


class TestExpression(StrictModel):
    """A check's pass condition: a CEL expression that must give true."""

    expr: str | None = Field(default=None, min_length=1, description="CEL expression.")
    template: Any = refused("Go templates are not evaluated as tests here; use expr")
    javascript: Any = refused("JavaScript is not evaluated here; use expr")
    jsonPath: Any = refused("JSONPath is not evaluated here; use expr")

    def problems(self) -> Iterator[Problem]:
        if self.expr is None and self.template is self.javascript is self.jsonPath is None:
            yield ((), "set 'expr'")


class DisplayTemplate(StrictModel):
    """The message of a result: a CEL expression or a `{{.field}}` Go template."""

    expr: str | None = Field(default=None, min_length=1, description="CEL giving a string.")
    template: str | None = Field(
        default=None, description="Go template; only {{.field.path}} lookups are evaluated."
    )
    javascript: Any = refused("JavaScript is not evaluated here; use expr")
    jsonPath: Any = refused("JSONPath is not evaluated here; use expr")

    def problems(self) -> Iterator[Problem]:
        written = [n for n in ("expr", "template", "javascript", "jsonPath") if getattr(self, n)]
        if len(written) != 1:
            yield ((), "set exactly one of 'expr' and 'template'")


def _nested(name: str, value: Any) -> Iterator[Problem]:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    for index, item in enumerate(items):
        where: tuple[str | int, ...] = (name, index) if isinstance(value, list) else (name,)
        for path, message in item.problems():
            yield ((*where, *path), message)


class CheckRetries(StrictModel):
    """canary-checker's `retries`: how a run that failed or errored is tried again within
    the same run. On a check; on the canary's spec, defaults for its checks, merged field by
    field (a check's own fields win)."""

    maxRetries: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETRIES,
        description=f"Attempts after the first, 0 to {MAX_RETRIES}; the run stops at the "
        "first attempt that passes.",
    )
    interval: Duration | None = Field(
        default=None, description="Wait between two attempts. Default: 1s."
    )
    delay: Duration | None = Field(
        default=None, description="Wait before the first attempt. Default: none."
    )
    timeout: Duration | None = Field(
        default=None,
        description="Start no attempt after this long since the first one began; with no "
        f"maxRetries, retry up to {MAX_RETRIES} times within it.",
    )
    disabled: bool | None = Field(
        default=None,
        description="No retries; false on a check re-enables what the canary disabled.",
    )

    def problems(self) -> Iterator[Problem]:
        interval = self.interval
        if self.timeout is not None and interval is not None and not parse_duration(interval):
            yield (("interval",), "must be greater than zero when timeout is set")

    def merged(self, override: CheckRetries | None) -> CheckRetries:
        """These retries as defaults, with `override`'s fields set over them."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def plan(self) -> RetryPlan | None:
        """What an agent does with these retries (None: no retries), as canary-checker runs
        them: retried when `maxRetries` > 0 or a `timeout` is set, unless `disabled`."""
        timeout = parse_duration(self.timeout) if self.timeout is not None else 0.0
        if self.disabled or not (self.maxRetries or timeout):
            return None
        count = self.maxRetries if self.maxRetries is not None else MAX_RETRIES
        interval = parse_duration(self.interval) if self.interval is not None else 1.0
        delay = parse_duration(self.delay) if self.delay is not None else 0.0
        return RetryPlan(count, interval, delay, timeout)


@dataclass(frozen=True)
class RetryPlan:
    """Retries as an agent runs them: at most `count` after the first attempt, `interval`
    seconds apart, after waiting `delay` once; with `timeout` > 0, none starts `timeout`
    seconds or more after the first attempt began."""

    count: int
    interval: float
    delay: float
    timeout: float

    def longest(self, attempt: float) -> float:
        """The longest a run takes when each attempt takes up to `attempt` seconds."""
        bounded = (self.count + 1) * attempt + self.count * self.interval
        if self.timeout:
            bounded = min(bounded, self.timeout + attempt)
        return self.delay + bounded


class CheckBase(StrictModel):
    """Fields every check type shares (canary-checker's `Description`)."""

    name: CheckName = ""
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    icon: str | None = Field(default=None, description="Icon URL or name, shown on the site.")
    timeout: Timeout | None = Field(
        default=None,
        description="Give up after this long. Default: 10s, or 90% of the schedule period "
        "when that is shorter. Must be shorter than the schedule period.",
    )
    thresholdMillis: int | None = Field(
        default=None, ge=1, description="Fail the check when it takes longer than this."
    )
    namespace: Any = accepted("results belong to the canary's namespace here")
    metrics: Any = accepted("custom Prometheus metrics from check results are not exported")
    transformDeleteStrategy: Any = accepted("only applies to transform, which is not supported")
    markFailOnEmpty: Any = accepted("only applies to transform, which is not supported")
    relationships: Any = accepted("links results to Mission Control components and configs")
    dependsOn: Any = refused("the checks of a canary run independently here")
    retries: CheckRetries | None = Field(
        default=None,
        description="Try a run that failed or errored again, within the same run: the "
        "result is the last attempt's, with the retries it took.",
    )
    degradedThresholdMillis: int | None = Field(
        default=None,
        ge=1,
        description="A run that passes but takes longer than this is 'degraded': up for "
        "uptime, shown amber.",
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        """What canary-checker names a check that has no name."""
        return data.get("description")

    @model_validator(mode="before")
    @classmethod
    def _fill_name(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            name = cls.default_name(data) if data.get("name") in (None, "") else None
        except UnknownValue:
            name = UNKNOWN
        if name is UNKNOWN:  # in a check rebuilt for its rules: made from a field that failed
            return {**data, "name": UNKNOWN}
        if isinstance(name, str) and name:
            return {**data, "name": name[:MAX_CHECK_NAME]}
        return data

    def problems(self) -> Iterator[Problem]:
        yield from self.separately(self._name_problems())
        yield from self.separately(_nested("retries", self.retries))
        yield from self.separately(self._degraded_problems())

    def _name_problems(self) -> Iterator[Problem]:
        if not self.name:
            yield (("name",), "required field is missing (no name, description or target)")

    def _degraded_problems(self) -> Iterator[Problem]:
        degraded, threshold = self.degradedThresholdMillis, self.thresholdMillis
        if degraded is not None and threshold is not None and degraded >= threshold:
            yield (
                ("degradedThresholdMillis",),
                f"{degraded} must be lower than thresholdMillis ({threshold}): a run slower "
                "than thresholdMillis fails, so it could never be degraded",
            )

    def warnings(self) -> Iterator[Problem]:
        """Fields that load but say something the check will not do."""
        return iter(())


class TemplatableCheck(CheckBase):
    """A check with canary-checker's `test`, `display` and `transform`."""

    test: TestExpression | None = None
    display: DisplayTemplate | None = None
    transform: Any = refused(
        "transform builds results in canary-checker's result pipeline, which is not run here"
    )

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _nested("test", self.test)
        yield from _nested("display", self.display)


def _endpoint_problems(endpoint: str) -> Iterator[Problem]:
    match = _HOST_PORT.fullmatch(endpoint)
    if not match or not 0 < int(match.group(2)) < 65536:
        yield (("endpoint",), f"{endpoint!r} is not host:port (e.g. 'db.example.com:5432')")


def _publish_alias(schema: dict[str, Any]) -> None:
    properties = schema.get("properties", {})
    if "thresholdMillis" in properties:
        alias = dict(properties["thresholdMillis"])
        alias["description"] = "canary-checker's name for thresholdMillis."
        properties["maxResponseTime"] = alias


def is_templated(text: str) -> bool:
    """Whether a URL or body holds `$(...)` or `{{...}}` references."""
    return "$(" in text or "{{" in text


class HttpCheck(TemplatableCheck):
    """An HTTP request whose status, latency, certificate and body are checked."""

    model_config = ConfigDict(json_schema_extra=_publish_alias)

    url: str | None = Field(
        default=None,
        description="http:// or https:// URL; $(NAME) takes a variable of `env`; "
        "user:password@ sends basic auth.",
    )
    endpoint: str | None = Field(default=None, description="Deprecated name of url.")
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: list[Header] = Field(default_factory=list)
    body: str | None = None
    templateBody: bool | None = Field(
        default=None, description="Render body as a Go template over env, check and canary."
    )
    env: list[EnvVar] | None = Field(
        default=None, description="Variables for $(NAME) in url and {{.NAME}} in the body."
    )
    username: SecretValue | None = Field(default=None, description="Basic (or digest) auth.")
    password: SecretValue | None = None
    digest: bool | None = Field(default=None, description="Use HTTP digest authentication.")
    responseCodes: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, description="Accepted status codes; empty means any 2xx."
    )
    responseContent: str | None = Field(
        default=None, description="The body must contain this text."
    )
    maxSSLExpiry: int | None = Field(
        default=None,
        ge=0,
        description="Fail when the certificate expires within this many days (or there is "
        "no certificate).",
    )
    thresholdMillis: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("thresholdMillis", "maxResponseTime"),
        description="Fail when slower than this (alias: maxResponseTime).",
    )
    followRedirects: bool = True
    maxRedirects: int | None = Field(
        default=None,
        ge=0,
        description="Redirects to follow (default 20); 0 follows none, whatever "
        "followRedirects says.",
    )
    responseJSONContent: Any = accepted("deprecated, and ignored by canary-checker too")
    ntlm: Any = refused("NTLM authentication is not implemented")
    ntlmv2: Any = refused("NTLM authentication is not implemented")
    oauth2: OAuth2 | None = Field(
        default=None,
        description="Fetch a bearer token with the client-credentials grant before each run.",
    )
    awsSigV4: Any = refused("AWS SigV4 signing is not implemented")
    tlsConfig: TlsConfig | None = None
    crawl: Any = refused("crawling links is not implemented")
    connection: Any = refused(
        "connections live in a Mission Control server; write url, username and password"
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("url") or data.get("endpoint")

    @property
    def target(self) -> str:
        """The URL as written (`url`, else the deprecated `endpoint`)."""
        return self.url or self.endpoint or ""

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if self.url is not None and self.endpoint is not None:
            yield (("endpoint",), "cannot specify both endpoint and url")
        elif self.url is None and self.endpoint is None and self.connection is None:
            yield (("url",), "required field is missing")
        elif self.target:
            where = "url" if self.url is not None else "endpoint"
            if not is_templated(self.target) and (problem := url_problem(self.target)):
                yield ((where,), problem)
        yield from _nested("headers", self.headers)
        yield from _nested("env", self.env)
        yield from _nested("username", self.username)
        yield from _nested("password", self.password)
        yield from _nested("tlsConfig", self.tlsConfig)
        if self.digest and self.username is None:
            yield (("digest",), "digest authentication needs username and password")
        if self.oauth2 is not None and (self.username is None or self.password is None):
            yield (("oauth2",), "oauth2 needs username (the client id) and password (its secret)")

    def warnings(self) -> Iterator[Problem]:
        written = "followRedirects" in self.model_fields_set
        if self.maxRedirects == 0 and self.followRedirects and written:
            yield (
                ("maxRedirects",),
                "0 follows no redirect, so followRedirects: true has no effect (a 3xx is the "
                "result); write followRedirects: false, or a maxRedirects above 0",
            )


class TcpCheck(TemplatableCheck):
    """A TCP connect to host:port."""

    endpoint: str

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("endpoint")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _endpoint_problems(self.endpoint)


class DnsCheck(CheckBase):
    """A DNS query whose answers are checked."""

    query: str = Field(min_length=1, description="The name to resolve.")
    querytype: Literal["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"] = "A"
    server: str | None = Field(default=None, description="Resolver address; default: system's.")
    port: int = Field(default=53, ge=1, le=65535)
    minrecords: int | None = Field(default=None, ge=0)
    exactreply: list[str] | None = Field(
        default=None, description="The answers must be exactly these (order ignored)."
    )
    timeout: Timeout | Annotated[int, Field(ge=0, le=int(MAX_TIMEOUT_SECONDS))] | None = Field(  # type: ignore[assignment]
        default=None,
        description="A duration, or canary-checker's integer seconds (0: 10 seconds); "
        "capped at 90% of the schedule period.",
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        query = data.get("query")
        return data.get("description") or (
            f"{data.get('querytype', 'A')}/{query}" if query else None
        )

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        # A host name is resolved by the agent at each run, as canary-checker dials it.
        if self.server is not None and not _is_host(self.server):
            yield (
                ("server",),
                f"{self.server!r} is not an IP address or host name (a port goes in `port`)",
            )


class TlsCheck(CheckBase):
    """A TLS handshake whose certificate expiry is checked."""

    endpoint: str
    serverName: str | None = Field(default=None, description="SNI name; default: the host.")
    maxSSLExpiry: int = Field(
        default=7, ge=0, description="Fail when the certificate expires within this many days."
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("endpoint")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _endpoint_problems(self.endpoint)


# --- icmp, multihttp and grpc (issue 15) ----------------------------------------------------

MAX_PING_PACKETS = 100
MAX_PING_PAYLOAD = 65000
MAX_MULTIHTTP_ENTRIES = 10
MAX_MULTIHTTP_ITEMS = 32  # assertions or variables of one entry
_HOST_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]*$"
_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
        return True
    except ValueError:
        return bool(_HOST_NAME.match(text))


def ping_host(endpoint: str) -> str:
    """The host an icmp `endpoint` names: a URL's host (canary-checker's examples write
    `https://github.com`), else the endpoint itself."""
    if "://" in endpoint:
        return urlsplit(endpoint).hostname or ""
    return endpoint


class IcmpCheck(TemplatableCheck):
    """ICMP echo (ping) to a host: packet loss and round-trip times (canary-checker's icmp)."""

    endpoint: str = Field(
        min_length=1, description="Host name or IP address to ping; a URL pings its host."
    )
    packetCount: int = Field(
        default=3, ge=1, le=MAX_PING_PACKETS, description="Echo requests to send."
    )
    interval: Duration = Field(default="1s", description="Time between two echo requests.")
    packetSize: int = Field(
        default=56,
        ge=0,
        le=MAX_PING_PAYLOAD,
        description="Payload bytes of each echo request (ping's -s; the ICMP header adds 8).",
    )
    ipVersion: Literal["Any", "V4", "V6"] = Field(
        default="Any",
        description="Address family when the name resolves to both: Any takes the first "
        "address the resolver returns.",
    )
    packetLossThreshold: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Fail when more than this percentage of packets is lost. Default: fail "
        "only when no reply comes back.",
    )
    thresholdMillis: int | None = Field(
        default=None, ge=1, description="Fail when the average round trip is slower than this."
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("endpoint")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if not _is_host(ping_host(self.endpoint)):
            yield (("endpoint",), f"{self.endpoint!r} is not a host name or IP address")
        sending = (self.packetCount - 1) * parse_duration(self.interval)
        if isinstance(self.timeout, str) and sending >= parse_duration(self.timeout):
            yield (
                ("interval",),
                f"{self.packetCount} requests {self.interval} apart take {sending:g}s, not "
                f"less than timeout {self.timeout}",
            )


class MultiHttpRequest(StrictModel):
    """One request of a multi-step HTTP check; `${name}` takes a variable of an earlier step."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str = Field(
        min_length=1, description="http:// or https:// URL; may use ${name} and ${env:NAME}."
    )
    headers: list[Header] = Field(default_factory=list)
    body: str | None = Field(default=None, description="Sent as is, after ${name} substitution.")

    def problems(self) -> Iterator[Problem]:
        if not self.url.startswith("${") and (problem := url_problem(self.url)):
            yield (("url",), problem)
        yield from _nested("headers", self.headers)


class MultiHttpAssertion(StrictModel):
    """One condition on a response (Grafana Synthetic Monitoring's multihttp assertion)."""

    type: Literal["TEXT", "JSON_PATH_VALUE", "JSON_PATH_ASSERTION", "REGEX_ASSERTION"] = Field(
        description="TEXT compares the subject with value; JSON_PATH_VALUE compares the value "
        "at expression; JSON_PATH_ASSERTION needs expression to match; REGEX_ASSERTION needs "
        "the subject to match the regular expression."
    )
    subject: Literal["RESPONSE_BODY", "RESPONSE_HEADERS", "HTTP_STATUS_CODE"] = Field(
        default="RESPONSE_BODY",
        description="What TEXT and REGEX_ASSERTION look at; headers as 'name: value' lines.",
    )
    condition: (
        Literal["CONTAINS", "NOT_CONTAINS", "EQUALS", "NOT_EQUALS", "STARTS_WITH", "ENDS_WITH"]
        | None
    ) = Field(default=None, description="How TEXT and JSON_PATH_VALUE compare.")
    expression: str | None = Field(
        default=None, description="A JSON path ($.a.b[0]) or a regular expression."
    )
    value: str | None = Field(default=None, description="What the condition compares with.")

    def problems(self) -> Iterator[Problem]:
        needs_expression = self.type != "TEXT"
        if needs_expression and not self.expression:
            yield (("expression",), f"a {self.type} assertion needs 'expression'")
        if self.type in ("TEXT", "JSON_PATH_VALUE"):
            if self.condition is None:
                yield (("condition",), f"a {self.type} assertion needs 'condition'")
            if self.value is None:
                yield (("value",), f"a {self.type} assertion needs 'value'")
        if self.type == "REGEX_ASSERTION" and self.expression:
            yield from _regex_problems(self.expression)
        if self.type.startswith("JSON_PATH") and self.expression:
            yield from _json_path_problems(self.expression)


class MultiHttpVariable(StrictModel):
    """A value captured from a response, used by later requests as `${name}`."""

    name: str = Field(pattern=_VARIABLE, description="Used later as ${name}.")
    type: Literal["JSON_PATH", "REGEX", "HEADER", "CSS_SELECTOR"] = Field(
        description="JSON_PATH reads the body's JSON, REGEX takes the first group (else the "
        "whole match) in the body, HEADER takes a response header by name."
    )
    expression: str = Field(min_length=1, description="The path, expression or header name.")
    attribute: Any = refused("CSS selectors are not evaluated here")

    def problems(self) -> Iterator[Problem]:
        if self.type == "CSS_SELECTOR":
            yield (("type",), "not supported: CSS_SELECTOR (use JSON_PATH, REGEX or HEADER)")
        elif self.type == "REGEX":
            yield from _regex_problems(self.expression)
        elif self.type == "JSON_PATH":
            yield from _json_path_problems(self.expression)


def _regex_problems(expression: str) -> Iterator[Problem]:
    try:
        re.compile(expression)
    except re.error as error:
        yield (("expression",), f"{expression!r} is not a regular expression ({error})")


_JSON_PATH = re.compile(
    r"^\$(\.[A-Za-z_$][A-Za-z0-9_$-]*|\[[0-9]+\]|\[\*\]|\.\*|\['[^']*'\]|\[\"[^\"]*\"\])*$"
)


def is_json_path(expression: str) -> bool:
    """Whether an expression is in the JSON path subset the agent evaluates."""
    return bool(_JSON_PATH.match(expression))


def _json_path_problems(expression: str) -> Iterator[Problem]:
    if not is_json_path(expression):
        yield (
            ("expression",),
            f"{expression!r} is not a supported JSON path (expected $ followed by .key, "
            "['key'], [index], [*] or .*)",
        )


class MultiHttpEntry(StrictModel):
    """One step of a multi-step HTTP check: a request, its assertions and captures."""

    request: MultiHttpRequest
    assertions: list[MultiHttpAssertion] = Field(
        default_factory=list, max_length=MAX_MULTIHTTP_ITEMS
    )
    variables: list[MultiHttpVariable] = Field(default_factory=list, max_length=MAX_MULTIHTTP_ITEMS)

    def problems(self) -> Iterator[Problem]:
        yield from _nested("request", self.request)
        yield from _nested("assertions", self.assertions)
        yield from _nested("variables", self.variables)


class MultiHttpCheck(CheckBase):
    """Up to ten HTTP requests in order, passing values between them (SM's multihttp)."""

    entries: list[MultiHttpEntry] = Field(
        min_length=1, max_length=MAX_MULTIHTTP_ENTRIES, description="The requests, in order."
    )
    thresholdMillis: int | None = Field(
        default=None, ge=1, description="Fail when all the steps together take longer."
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _nested("entries", self.entries)
        known: set[str] = set()
        for index, entry in enumerate(self.entries):
            request = entry.request
            uses: list[tuple[tuple[str | int, ...], str]] = [
                (("url",), request.url),
                (("body",), request.body or ""),
            ]
            uses += [
                (("headers", i, "value"), h.value or "") for i, h in enumerate(request.headers)
            ]
            for path, text in uses:
                for name in _VARIABLE_USE.findall(text):
                    if name not in known:
                        yield (
                            ("entries", index, "request", *path),
                            f"${{{name}}} is not a variable of an earlier entry",
                        )
            known.update(variable.name for variable in entry.variables)


class GrpcCheck(TemplatableCheck):
    """A gRPC health check (`grpc.health.v1.Health/Check`); SERVING passes."""

    endpoint: str = Field(description="host:port of the gRPC server.")
    service: str = Field(
        default="", description="Service name asked about; empty asks about the whole server."
    )
    tls: bool = Field(default=False, description="Connect with TLS (default: plaintext).")
    tlsConfig: TlsConfig | None = Field(
        default=None, description="TLS settings: ca (insecureSkipVerify is refused); implies tls."
    )
    metadata: list[Header] = Field(
        default_factory=list, description="Request metadata (gRPC headers); names lower case."
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("endpoint")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _endpoint_problems(self.endpoint)
        yield from _nested("tlsConfig", self.tlsConfig)
        if self.tlsConfig is not None and self.tlsConfig.insecureSkipVerify:
            yield (
                ("tlsConfig", "insecureSkipVerify"),
                "not supported for grpc checks (gRPC always verifies); give the server's "
                "certificate as 'ca'",
            )
        yield from _nested("metadata", self.metadata)
        for index, entry in enumerate(self.metadata):
            if entry.name != entry.name.lower() or entry.name.startswith("grpc-"):
                yield (
                    ("metadata", index, "name"),
                    f"{entry.name!r}: metadata names are lower case and not grpc-*",
                )


MAX_BROWSER_SCRIPT = 16_384


class BrowserCheck(CheckBase):
    """A real browser (headless Chromium) loads a page and runs a Playwright script on it.

    The script runs on the agent, so an agent runs browser checks only when started with
    `--allow-browser-checks` (docs/agent.md#browser-checks).
    """

    url: str = Field(
        description="The page loaded first; its navigation timings become the result's phases."
    )
    script: str | None = Field(
        default=None,
        max_length=MAX_BROWSER_SCRIPT,
        description="Python statements run after the page loaded, as the body of an async "
        "function given `page` (Playwright's async Page) and `expect`; an exception or a "
        "failed `assert` fails the check.",
    )
    failOnConsoleError: bool = Field(
        default=False, description="Fail the check when the page logs an error to its console."
    )

    @classmethod
    def default_name(cls, data: dict[str, Any]) -> Any:
        return data.get("description") or data.get("url")

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if problem := url_problem(self.url):
            yield (("url",), problem)
        if self.script is not None:
            try:
                compile(browser_script_source(self.script), "<script>", "exec", dont_inherit=True)
            except SyntaxError as error:
                line = (error.lineno or 2) - 1
                yield (("script",), f"line {line}: {error.msg}")


def browser_script_source(script: str) -> str:
    """The script as the body of the async function the agent runs (one line added on top).

    Args:
        script: The check's `script`.

    Returns:
        Python source defining `async def __check__(page, expect)`.
    """
    indented = "\n".join("    " + line for line in script.splitlines()) or "    pass"
    return f"async def __check__(page, expect):\n{indented}\n    pass\n"
