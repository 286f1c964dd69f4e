"""What each agent runs: its derived canaries as check specs, secrets resolved (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agent.expressions.gotemplate import DOLLAR, TemplateError, render
from reconciler.core.resources import Resource
from schemas.canary import CHECK_TYPES, HEARTBEAT, effective_timeout
from schemas.checks import NEVER, CheckRetries, is_templated
from schemas.schedule import parse_schedule

_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingSecret(ValueError):
    """A check refers to an environment variable the control plane does not have, or its
    URL or body cannot be rendered with the values it has."""


@dataclass(frozen=True)
class AgentConfig:
    """The exact bytes served to one agent and their strong ETag."""

    agent: str
    region: str
    body: bytes
    etag: str
    canaries: frozenset[str]
    checks: Mapping[str, Mapping[str, str]]  # derived canary id -> check name -> check type
    problems: tuple[str, ...] = ()


def resolve_secrets(value: str, environment: Mapping[str, str], where: str) -> str:
    """Replace each `${env:NAME}` in a string with the variable's value.

    Raises:
        MissingSecret: a referenced variable is not set.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environment:
            raise MissingSecret(f"{where}: environment variable {name} is not set")
        return environment[name]

    return _ENV_REFERENCE.sub(substitute, value)


def _secret(entry: Mapping[str, Any], env: Mapping[str, str], where: str) -> str:
    """The value of a `{value}` / `{valueFrom: {env}}` entry (header, env var, username)."""
    if "valueFrom" in entry:
        name = entry["valueFrom"]["env"]
        if name not in env:
            raise MissingSecret(f"{where}: environment variable {name} is not set")
        return env[name]
    return resolve_secrets(str(entry.get("value", "")), env, where)


def _http_fields(
    check: Mapping[str, Any],
    spec: dict[str, Any],
    env: Mapping[str, str],
    where: str,
    canary: Mapping[str, str],
) -> None:
    """Resolve what an HTTP check needs from the server: secrets, `env`, templates."""
    variables = {v["name"]: _secret(v, env, f"{where}.env") for v in check.get("env", [])}
    context: dict[str, Any] = {
        **variables,
        "canary": canary,
        "check": {"name": check["name"], "description": check.get("description", "")},
    }
    url = check["url"]
    try:
        if is_templated(url):
            # canary-checker templates the URL with both $(...) and {{...}} delimiters.
            url = render(render(url, variables, DOLLAR), variables)
        if "body" in check and check.get("templateBody"):
            spec["body"] = render(check["body"], context)
    except TemplateError as error:  # a variable's value can itself look like a template
        raise MissingSecret(f"{where}: cannot render the template: {error}") from error
    spec["url"] = resolve_secrets(url, env, f"{where}.url")
    spec["headers"] = [
        {"name": h["name"], "value": _secret(h, env, f"{where}.headers")}
        for h in check.get("headers", [])
    ]
    for field in ("username", "password"):
        if field in check:
            spec[field] = _secret(check[field], env, f"{where}.{field}")
    tls = check.get("tlsConfig")
    if tls is not None:
        spec["tlsConfig"] = {"insecureSkipVerify": bool(tls.get("insecureSkipVerify", False))}
        if "ca" in tls:
            spec["tlsConfig"]["ca"] = _secret(tls["ca"], env, f"{where}.tlsConfig.ca")
    if "body" in spec:
        spec["body"] = resolve_secrets(spec["body"], env, f"{where}.body")
    for resolved in ("env", "templateBody"):
        spec.pop(resolved, None)


def _check_spec(
    check_type: str,
    check: Mapping[str, Any],
    period: float | None,
    env: Mapping[str, str],
    where: str,
    canary: Mapping[str, str],
    defaults: CheckRetries | None = None,
) -> dict[str, Any]:
    spec = {"type": check_type, **{k: v for k, v in check.items() if k != "timeout"}}
    spec["timeout_ms"] = round(effective_timeout(check.get("timeout"), period) * 1000)
    written = spec.pop("retries", None)
    own = CheckRetries(**written) if written else None
    retries = defaults.merged(own) if defaults is not None else own
    plan = retries.plan() if retries is not None else None
    if plan is not None:
        # In milliseconds, as the timeout: the agent parses no durations.
        spec["retries"] = {
            "count": plan.count,
            "interval_ms": round(plan.interval * 1000),
            "delay_ms": round(plan.delay * 1000),
            "timeout_ms": round(plan.timeout * 1000),
        }
    if check_type in ("http", "tcp", "icmp", "grpc") and ("test" in check or "display" in check):
        spec["canary"] = dict(canary)
    if check_type == "http":
        _http_fields(check, spec, env, where, canary)
    elif check_type in ("multihttp", "grpc"):
        _secret_fields(check_type, spec, env, where)
    return spec


def _secret_fields(
    check_type: str, spec: dict[str, Any], env: Mapping[str, str], where: str
) -> None:
    """Resolve the secrets of multihttp requests and grpc metadata as HTTP checks' are."""

    def pairs(entries: list[Mapping[str, Any]], at: str) -> list[dict[str, str]]:
        return [{"name": e["name"], "value": _secret(e, env, at)} for e in entries]

    if check_type == "grpc":
        spec["metadata"] = pairs(spec.get("metadata", []), f"{where}.metadata")
        tls = spec.get("tlsConfig")
        if tls is not None and "ca" in tls:
            spec["tlsConfig"] = {**tls, "ca": _secret(tls["ca"], env, f"{where}.tlsConfig.ca")}
        return
    entries = []
    for index, entry in enumerate(spec.get("entries", [])):
        at = f"{where}.entries[{index}].request"
        request = dict(entry["request"])
        request["url"] = resolve_secrets(request["url"], env, f"{at}.url")
        request["headers"] = pairs(request.get("headers", []), f"{at}.headers")
        if "body" in request:
            request["body"] = resolve_secrets(request["body"], env, f"{at}.body")
        entries.append({**entry, "request": request})
    spec["entries"] = entries


def canary_payload(resource: Resource, environment: Mapping[str, str]) -> dict[str, Any]:
    """One derived canary as an agent receives it.

    Raises:
        MissingSecret: a check refers to an unset environment variable.
    """
    spec = resource.spec
    period = parse_schedule(spec["schedule"]).period_seconds()
    namespace, _, name = str(spec.get("parent", resource.name)).partition("/")
    canary = {"name": name, "namespace": namespace}
    # The canary's retries are defaults of its checks' (canary-checker merges them so).
    defaults = CheckRetries(**spec["retries"]) if spec.get("retries") else None
    checks = []
    for check_type in CHECK_TYPES:
        for check in spec.get(check_type, []):
            where = f"{resource.name} {check_type} check {check['name']!r}"
            checks.append(
                _check_spec(check_type, check, period, environment, where, canary, defaults)
            )
    # A heartbeat canary has nothing to run: its rows come from pings and missed deadlines.
    schedule = NEVER if spec.get(HEARTBEAT) else spec["schedule"]
    return {"id": resource.name, "schedule": schedule, "checks": checks}


def agent_configs(
    resources: Iterable[Resource], environment: Mapping[str, str]
) -> dict[str, AgentConfig]:
    """Build every agent's config (the control plane's own as agent `local`).

    A derived canary whose secrets cannot be resolved is left out of its agent's config and
    named in that config's `problems`, so one missing variable stops one canary, not a fleet.
    """
    by_agent: dict[str, list[Resource]] = {}
    regions: dict[str, str] = {}
    for resource in resources:
        if resource.kind == "DerivedCanary" and resource.agent is not None:
            by_agent.setdefault(resource.agent, []).append(resource)
            regions[resource.agent] = resource.spec["region"]
        elif resource.kind == "Agent":
            by_agent.setdefault(resource.name, [])
            regions.setdefault(resource.name, resource.spec["region"])
    configs = {}
    for agent, derived in by_agent.items():
        canaries, problems = [], []
        for resource in sorted(derived, key=lambda r: r.name):
            try:
                canaries.append(canary_payload(resource, environment))
            except MissingSecret as error:
                problems.append(str(error))
        document = {"agent": agent, "region": regions[agent], "canaries": canaries}
        body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        checks = {c["id"]: {k["name"]: k["type"] for k in c["checks"]} for c in canaries}
        for resource in derived:
            # Heartbeats are not run but their rows are stored as this agent's (`local`): the
            # control plane writes them (server/heartbeats.py), so ingest knows their names.
            if resource.name in checks:
                for heartbeat in resource.spec.get(HEARTBEAT, []):
                    checks[resource.name][heartbeat["name"]] = HEARTBEAT
        configs[agent] = AgentConfig(
            agent, regions[agent], body, etag, frozenset(checks), checks, tuple(problems)
        )
    return configs


def agent_access(resources: Collection[Resource]) -> dict[str, str | None]:
    """For every agent, None when it may pull config, else why not (disabled agent or region)."""
    regions = {r.name: r.spec.get("enabled", True) for r in resources if r.kind == "Region"}
    access: dict[str, str | None] = {}
    for resource in resources:
        if resource.kind != "Agent":
            continue
        region = resource.spec["region"]
        if not resource.spec.get("enabled", True):
            access[resource.name] = f"agent {resource.name} is disabled"
        elif not regions.get(region, True):
            access[resource.name] = f"region {region} is disabled"
        else:
            access[resource.name] = None
    return access
