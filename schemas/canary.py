"""The Canary kind: synthetic checks (HTTP, TCP, DNS, TLS, ICMP, multi-step HTTP, gRPC) and
where they run.

The same model reads canary-checker's Canary (`canaries.flanksource.com/v1`): every field of
its `api/v1` Canary spec and http/tcp/dns checks is either implemented with canary-checker's
semantics, accepted but not acted on, or refused with the reason (see `schemas.compat` and
docs/compatibility.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PlainValidator,
    WithJsonSchema,
)

from schemas.base import (
    API_VERSION,
    CANARY_CHECKER_API_VERSION,
    Metadata,
    Problem,
    StrictModel,
    Text,
    dump,
)
from schemas.checks import (
    DEFAULT_SCHEDULE,
    DNS_DEFAULT_TIMEOUT_SECONDS,
    NEVER,
    BrowserCheck,
    CheckBase,
    CheckRetries,
    DnsCheck,
    GrpcCheck,
    HttpCheck,
    IcmpCheck,
    MultiHttpCheck,
    TcpCheck,
    TlsCheck,
)
from schemas.compat import accepted, unsupported_check_type
from schemas.durations import format_duration, parse_duration
from schemas.heartbeat import HeartbeatCheck, heartbeat_schedule
from schemas.limits import MIN_SCHEDULE_SECONDS, limit_hint
from schemas.schedule import parse_schedule

POLICIES = ("any", "majority", "all")


def _check_policy(value: Any) -> str | dict[str, int]:
    if isinstance(value, str) and value in POLICIES:
        return value
    if isinstance(value, dict) and set(value) == {"count"}:
        count = value["count"]
        if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
            return {"count": count}
    raise ValueError("expected 'any', 'majority', 'all' or {count: N} with N >= 1")


IncidentPolicy = Annotated[
    str | dict[str, int],
    PlainValidator(_check_policy),
    WithJsonSchema(
        {
            "oneOf": [
                {"enum": list(POLICIES)},
                {
                    "type": "object",
                    "properties": {"count": {"type": "integer", "minimum": 1}},
                    "required": ["count"],
                    "additionalProperties": False,
                },
            ],
            "description": "How region verdicts combine into an incident.",
        }
    ),
]

CHECK_TYPES = ("http", "tcp", "dns", "tls", "icmp", "multihttp", "grpc", "browser")
_ANY_TYPE = ", ".join(CHECK_TYPES) + " or heartbeat"
# Heartbeat checks are not probes an agent runs: the control plane receives their pings
# (schemas/heartbeat.py), so they are kept apart from CHECK_TYPES.
HEARTBEAT = "heartbeat"


class UpstreamCheckTypes(StrictModel):
    """canary-checker's other check types: named, so the error says what is not run here."""

    docker: Any = unsupported_check_type()
    dockerPush: Any = unsupported_check_type()
    containerd: Any = unsupported_check_type()
    containerdPush: Any = unsupported_check_type()
    s3: Any = unsupported_check_type()
    pod: Any = unsupported_check_type()
    ldap: Any = unsupported_check_type()
    postgres: Any = unsupported_check_type()
    mssql: Any = unsupported_check_type()
    mysql: Any = unsupported_check_type()
    restic: Any = unsupported_check_type()
    jmeter: Any = unsupported_check_type()
    junit: Any = unsupported_check_type()
    helm: Any = unsupported_check_type()
    redis: Any = unsupported_check_type()
    prometheus: Any = unsupported_check_type()
    mongodb: Any = unsupported_check_type()
    cloudwatch: Any = unsupported_check_type()
    pubsub: Any = unsupported_check_type()
    github: Any = unsupported_check_type()
    gitProtocol: Any = unsupported_check_type()
    kubernetes: Any = unsupported_check_type()
    kubernetesResource: Any = unsupported_check_type()
    folder: Any = unsupported_check_type()
    exec: Any = unsupported_check_type()
    awsConfig: Any = unsupported_check_type()
    awsConfigRule: Any = unsupported_check_type()
    databaseBackup: Any = unsupported_check_type()
    catalog: Any = unsupported_check_type()
    opensearch: Any = unsupported_check_type()
    elasticsearch: Any = unsupported_check_type()
    alertmanager: Any = unsupported_check_type()
    dynatrace: Any = unsupported_check_type()
    azureDevops: Any = unsupported_check_type()
    webhook: Any = unsupported_check_type()
    # `namespace` is a check type upstream, but as a field name it is left to checks.


class CanarySpec(UpstreamCheckTypes):
    """The checks of a canary, their schedule, where they run and how incidents open."""

    schedule: str | None = Field(
        default=None,
        max_length=256,
        description="'@every <duration>', a 5-field cron expression, or '@never'. Default: "
        "`interval`, else '@every 1m' (a canary-checker Canary with neither does not run).",
    )
    interval: int | None = Field(
        default=None, ge=0, description="Seconds between runs (canary-checker's older schedule)."
    )
    replicas: int | None = Field(
        default=None, ge=0, description="0 pauses the canary; other values have no effect here."
    )
    agentSelector: list[str] | None = Field(
        default=None,
        description="Agent name globs, case-insensitive, trimmed; '!glob' excludes, 'local' "
        "is the control plane. Absent: the control plane only.",
    )
    incidentPolicy: IncidentPolicy = "majority"
    failureThreshold: int = Field(default=3, ge=1)
    successThreshold: int = Field(default=2, ge=1)
    icon: Text | None = Field(default=None, description="Shown on the canary's page.")
    severity: Text | None = Field(default=None, description="Shown on the canary's page.")
    owner: Text | None = Field(default=None, description="Shown on the canary's page.")
    slo: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="Service level objective: the uptime, in percent of runs, each calendar "
        "month should reach (e.g. 99.9). The site's SLA reports show it with the error budget "
        "spent.",
    )
    http: list[HttpCheck] = Field(default_factory=list)
    tcp: list[TcpCheck] = Field(default_factory=list)
    dns: list[DnsCheck] = Field(default_factory=list)
    tls: list[TlsCheck] = Field(default_factory=list)
    icmp: list[IcmpCheck] = Field(default_factory=list)
    multihttp: list[MultiHttpCheck] = Field(default_factory=list)
    grpc: list[GrpcCheck] = Field(default_factory=list)
    browser: list[BrowserCheck] = Field(
        default_factory=list,
        description="Browser checks; run only by agents started with --allow-browser-checks.",
    )
    heartbeat: list[HeartbeatCheck] = Field(
        default_factory=list,
        description="Heartbeats: jobs that ping the control plane; no ping within "
        "`period + grace` is a failed run. A canary with heartbeats has no other checks, "
        "no schedule, and runs on the control plane (agentSelector absent or ['local']).",
    )
    resultMode: Any = accepted("results stay one per check; no combined JUnit report is made")
    env: Any = accepted("canary-level env is not read by http, tcp or dns checks upstream either")
    retries: CheckRetries | None = Field(
        default=None,
        description="Retries of every check of the canary; a check's own `retries` fields "
        "win, field by field.",
    )

    def checks(self) -> Iterator[tuple[str, int, CheckBase]]:
        """Every check with its type and index in its list."""
        for check_type in CHECK_TYPES:
            checks: list[CheckBase] = getattr(self, check_type)
            for index, check in enumerate(checks):
                yield check_type, index, check

    def effective_schedule(self, upstream: bool = False) -> str:
        """The schedule the canary runs on.

        Args:
            upstream: whether the document is canary-checker's: there a canary without
                `schedule` and `interval` (or with `replicas: 0`) does not run.
        """
        if self.replicas == 0:
            return NEVER
        if self.heartbeat:
            return heartbeat_schedule(self.heartbeat)
        if self.schedule is not None:
            return self.schedule
        if self.interval:
            return f"@every {self.interval}s"
        return NEVER if upstream else DEFAULT_SCHEDULE

    def rule_problems(self, schedule: str) -> Iterator[Problem]:
        """Rules over several fields, given the effective schedule."""
        period: float | None = None
        try:
            period = parse_schedule(schedule).period_seconds()
        except ValueError as error:
            yield (("schedule",), str(error))
        if period is not None and period < MIN_SCHEDULE_SECONDS:
            shortest = format_duration(MIN_SCHEDULE_SECONDS)
            yield (
                ("schedule",),
                f"invalid schedule {schedule!r}: @every interval must be at least {shortest}; "
                + limit_hint("minimum schedule period", shortest),
            )
        yield from self.separately(self._selector_problems())
        seen: dict[str, str] = {}
        any_check = False
        for check_type, index, check in self.checks():
            any_check = True
            where: tuple[str | int, ...] = (check_type, index)
            yield from self.separately(self._unique_name(where, check, seen))
            yield from self.separately(self._check_problems(where, check, period))
        yield from self._heartbeat_problems(seen, any_check)
        any_check = any_check or bool(self.heartbeat)
        if self.retries is not None:
            for path, message in self.retries.problems():
                yield (("retries", *path), message)
        other_types = (getattr(self, name) for name in UpstreamCheckTypes.model_fields)
        if not any_check and all(value is None for value in other_types):
            yield (
                (),
                f"a canary needs at least one check ({_ANY_TYPE})",
            )

    def _selector_problems(self) -> Iterator[Problem]:
        """Each agentSelector pattern holds a glob besides its '!'."""
        for pattern_index, pattern in enumerate(self.agentSelector or []):
            body = pattern.strip()
            body = body[1:] if body.startswith("!") else body
            if not body.strip():
                yield (("agentSelector", pattern_index), "empty pattern")

    def _unique_name(
        self, where: tuple[str | int, ...], check: CheckBase, seen: dict[str, str]
    ) -> Iterator[Problem]:
        """A check's name is not among those `seen` before it, which it joins."""
        if check.name and check.name in seen:
            yield (
                (*where, "name"),
                f"check name {check.name!r} is already used by a {seen[check.name]} check",
            )
        seen[check.name] = str(where[0])

    def _check_problems(
        self, where: tuple[str | int, ...], check: CheckBase, period: float | None
    ) -> Iterator[Problem]:
        """One check's rules, and its timeout and retries against the schedule `period`."""
        for path, message in check.problems():
            yield ((*where, *path), message)
        if isinstance(check.timeout, str) and period is not None:
            timeout = parse_duration(check.timeout)
            if timeout >= period:
                yield (
                    (*where, "timeout"),
                    f"timeout {check.timeout} must be shorter than the schedule period "
                    f"({format_duration(period)})",
                )
        if period is not None:
            yield from _retry_problems(self.retries, check, where, period)

    def problems(self) -> Iterator[Problem]:
        yield from self.rule_problems(self.effective_schedule())

    def _heartbeat_problems(self, seen: dict[str, str], probes: bool) -> Iterator[Problem]:
        """Heartbeats are received by the control plane, never run: what that rules out."""
        if not self.heartbeat:
            return
        if probes:
            yield (
                (HEARTBEAT,),
                "a canary with heartbeat checks cannot hold other checks: put those in a "
                "canary of their own",
            )
        for written in ("schedule", "interval"):
            if getattr(self, written) is not None:
                yield (
                    (written,),
                    f"a heartbeat canary has no {written}: it is evaluated every "
                    "`period + grace` of its heartbeats",
                )
        selector = [p.strip().lower() for p in self.agentSelector or []]
        if self.agentSelector is not None and selector != ["local"]:
            yield (
                ("agentSelector",),
                "heartbeat pings are received by the control plane: leave agentSelector out "
                "or write ['local']",
            )
        for index, heartbeat in enumerate(self.heartbeat):
            where: tuple[str | int, ...] = (HEARTBEAT, index)
            if heartbeat.name in seen:
                yield (
                    (*where, "name"),
                    f"check name {heartbeat.name!r} is already used by a "
                    f"{seen[heartbeat.name]} check",
                )
            seen[heartbeat.name] = HEARTBEAT
            for path, message in heartbeat.problems():
                yield ((*where, *path), message)


def check_retries(defaults: CheckRetries | None, check: CheckBase) -> CheckRetries | None:
    """A check's retries: its own fields over the canary's (canary-checker's merge)."""
    if defaults is None:
        return check.retries
    return defaults.merged(check.retries)


def _retry_problems(
    defaults: CheckRetries | None, check: CheckBase, where: tuple[str | int, ...], period: float
) -> Iterator[Problem]:
    """All attempts of a run must end before the next run is due (else runs would be
    skipped: a check still running at its next due time is not started again)."""
    retries = check_retries(defaults, check)
    plan = retries.plan() if retries is not None else None
    if plan is None:
        return
    if isinstance(check.timeout, str) and parse_duration(check.timeout) >= period:
        return  # the timeout's own error says it
    attempt = effective_timeout(check.timeout, period)
    longest = plan.longest(attempt)
    if longest < period:
        return
    told = [f"{plan.count} retries {format_duration(plan.interval)} apart"]
    if plan.timeout:
        told.append(f"within retries.timeout {format_duration(plan.timeout)}")
    if plan.delay:
        told.append(f"after a delay of {format_duration(plan.delay)}")
    told.append(f"with timeout {format_duration(attempt)}")
    message = (
        f"{' '.join(told)} take up to {format_duration(longest)}, not less than the schedule "
        f"period ({format_duration(period)}): lower retries.maxRetries, retries.interval or "
        "timeout, or run less often"
    )
    if check.retries is not None:
        yield ((*where, "retries"), message)
    else:  # the canary's retries alone make it too long
        yield (("retries",), f"check {check.name!r}: {message}")


def effective_timeout(timeout: str | int | None, period: float | None) -> float:
    """The timeout a check runs with, in seconds.

    A duration is used as written; canary-checker's integer seconds (0 meaning 10) and an
    absent timeout (10s) are capped at 90% of the schedule period, as runs of one canary
    never overlap.
    """
    if isinstance(timeout, str):
        return parse_duration(timeout)
    seconds = float(timeout or DNS_DEFAULT_TIMEOUT_SECONDS)
    if period is None:
        return seconds
    return min(seconds, round(period * 0.9, 3))


class CanaryDocument(StrictModel):
    """A `kind: Canary` document (ours or canary-checker's apiVersion)."""

    apiVersion: Literal["canary-reconciler/v1", "canaries.flanksource.com/v1"] = API_VERSION
    kind: Literal["Canary"] = "Canary"
    metadata: Metadata
    spec: CanarySpec

    @property
    def upstream(self) -> bool:
        """Whether this is canary-checker's Canary."""
        return self.apiVersion == CANARY_CHECKER_API_VERSION

    @property
    def schedule(self) -> str:
        """The effective schedule (see `CanarySpec.effective_schedule`)."""
        return self.spec.effective_schedule(self.upstream)

    def problems(self) -> Iterator[Problem]:
        for path, message in self.spec.rule_problems(self.schedule):
            yield (("spec", *path), message)

    def warnings(self) -> Iterator[Problem]:
        """What asks for attention though it loads: a canary-checker Canary that never runs,
        check fields saying what the check will not do."""
        spec = self.spec
        if self.upstream and spec.schedule is None and not spec.interval and spec.replicas != 0:
            if spec.interval == 0:
                yield (
                    ("spec", "interval"),
                    "interval: 0 is no interval: canary-checker needs a positive one and does "
                    "not run this canary, and neither does this project (schedule @never)",
                )
            else:
                yield (
                    ("spec",),
                    "neither schedule nor interval: canary-checker does not run this canary, "
                    "and neither does this project (schedule @never)",
                )
        for check_type, index, check in spec.checks():
            for path, message in check.warnings():
                yield (("spec", check_type, index, *path), message)

    def notices(self) -> Iterator[Problem]:
        """How fields are read, nothing to fix: a DNS check's integer timeout (canary-checker's
        seconds) that the schedule period caps."""
        try:
            period = parse_schedule(self.schedule).period_seconds()
        except ValueError:
            return  # the schedule's own error says it
        for index, check in enumerate(self.spec.dns):
            if isinstance(check.timeout, str) or check.timeout is None or period is None:
                continue
            written = float(check.timeout or DNS_DEFAULT_TIMEOUT_SECONDS)
            used = effective_timeout(check.timeout, period)
            if used < written:
                yield (
                    ("spec", "dns", index, "timeout"),
                    f"timeout {check.timeout} ({format_duration(written)}) is capped at "
                    f"{format_duration(used)}, 90 % of the schedule period "
                    f"({format_duration(period)}): runs of one canary never overlap",
                )

    def resource_spec(self) -> dict[str, Any]:
        """The spec as the plan stores it and agents receive it: schedule resolved, the
        deprecated http `endpoint` turned into `url`, accepted/refused fields left out."""
        spec = dump(self.spec)
        spec["schedule"] = self.schedule
        spec.pop("interval", None)
        spec.pop("replicas", None)
        if not spec.get(HEARTBEAT):
            # Absent unless written: canaries stored before heartbeats keep their fingerprints.
            spec.pop(HEARTBEAT, None)
        for check in spec.get("http", []):
            if "endpoint" in check:
                check["url"] = check.pop("endpoint")
        return spec


__all__ = [
    "CANARY_CHECKER_API_VERSION",
    "CanaryDocument",
    "CanarySpec",
    "check_retries",
    "effective_timeout",
]
