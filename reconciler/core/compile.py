"""Compile a loaded configuration into desired state: resources and canary step schedules."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Config, Located
from reconciler.core.drive import DriveDecision, decide
from reconciler.core.resources import Resource, fingerprint
from reconciler.core.selector import LOCAL, select_agents
from reconciler.core.weights import StepSchedule, step_schedule
from schemas.base import dump
from schemas.canary import CanaryDocument
from schemas.route import RouteDocument

DEFAULT_LOCAL_REGION = "default"


@dataclass(frozen=True)
class DesiredState:
    """Everything one revision of the config repository asks for."""

    resources: dict[str, Resource] = field(default_factory=dict)
    schedules: dict[str, StepSchedule] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Routes nginx must not serve as written, with the reasons (core/drive.py).
    not_driven: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledCanary:
    """A canary's parent and derived resources, valid while its model and the fleet stay."""

    model: CanaryDocument
    fleet: str
    resources: tuple[Resource, ...]
    warning: Diagnostic | None


# Compiled canaries by key. Loads return the same model objects for unchanged files, so an
# unchanged canary in an unchanged fleet is reused instead of being derived again.
CompileCache = MutableMapping[str, CompiledCanary]


def _compile_canary(
    canary: Located[CanaryDocument],
    eligible: Sequence[str],
    region_of: Mapping[str, str],
    local_region: str | None,
    fleet: str,
) -> CompiledCanary:
    key, source = canary.key, canary.location()
    spec = canary.model.resource_spec()
    if canary.model.metadata.labels:
        # Alert routes match on them (core/routing.py); agents have no use for them.
        spec["labels"] = dict(canary.model.metadata.labels)
    resources = [Resource("Canary", key, spec, fingerprint(spec), source=source)]
    derived_base = {k: v for k, v in spec.items() if k not in ("agentSelector", "labels")}
    base_fingerprint = fingerprint(derived_base)
    selection = select_agents(canary.model.spec.agentSelector, eligible)
    targets = [(agent, region_of[agent]) for agent in selection.agents]
    if selection.local and local_region is not None:
        targets.append((LOCAL, local_region))
    for agent, region in targets:
        resources.append(
            Resource(
                "DerivedCanary",
                f"{key}@{agent}",
                {"parent": key, "agent": agent, "region": region, **derived_base},
                fingerprint(base_fingerprint, agent, region),
                parent=key,
                agent=agent,
                source=source,
            )
        )
    warning = None
    if not targets:
        warning = canary.diagnostic(
            ("spec", "agentSelector"),
            "matches no enabled agent: this canary will not run anywhere",
            "warning",
        )
    return CompiledCanary(canary.model, fleet, tuple(resources), warning)


def compile_config(
    config: Config,
    local_region: str = DEFAULT_LOCAL_REGION,
    cache: CompileCache | None = None,
) -> DesiredState:
    """Compile desired state: every document, one derived canary per (canary, matched agent),
    and each route's canary step schedule.

    Args:
        config: a loaded configuration without errors.
        local_region: the control plane's own region; `local` derived canaries run there.
        cache: compiled canaries of earlier compiles, read and refilled.

    Returns:
        The resources by address, the step schedules by route, and warnings.
    """
    state = DesiredState()
    for kind, documents in (
        ("Region", config.regions),
        ("Agent", config.agents),
        ("Receiver", config.receivers),
        ("AlertRouting", config.alert_routing),
    ):
        for key, document in documents.items():
            spec = dump(document.model.spec)
            resource = Resource(kind, key, spec, fingerprint(spec), source=document.location())  # type: ignore[arg-type]
            state.resources[resource.address] = resource

    enabled_regions = {n for n, r in config.regions.items() if r.model.spec.enabled}
    eligible = sorted(
        name
        for name, agent in config.agents.items()
        if agent.model.spec.enabled and agent.model.spec.region in enabled_regions
    )
    region_of = {name: agent.model.spec.region for name, agent in config.agents.items()}
    local_enabled = local_region in enabled_regions or local_region not in config.regions

    target_region = local_region if local_enabled else None
    fleet = fingerprint(eligible, [region_of[a] for a in eligible], target_region or "")
    for key, canary in config.canaries.items():
        compiled = cache.get(key) if cache is not None else None
        if compiled is None or compiled.model is not canary.model or compiled.fleet != fleet:
            compiled = _compile_canary(canary, eligible, region_of, target_region, fleet)
            if cache is not None:
                cache[key] = compiled
        for resource in compiled.resources:
            state.resources[resource.address] = resource
        if compiled.warning is not None:
            state.diagnostics.append(compiled.warning)
    if cache is not None:
        for stale in [key for key in cache if key not in config.canaries]:
            del cache[stale]

    for key, route in config.routes.items():
        spec = dump(route.model.spec)
        run_part = {"traffic_split": spec.get("traffic_split"), "canary": spec.get("canary")}
        resource = Resource(
            "Route",
            key,
            spec,
            fingerprint(spec),
            run_fingerprint=fingerprint(run_part),
            source=route.location(),
        )
        state.resources[resource.address] = resource
        decision = decide(route.model.spec)
        state.diagnostics.extend(_drive_diagnostics(route, decision))
        if not decision.driven:
            # Never on nginx, so no canary run either: it could only fail or mislead.
            state.not_driven[key] = decision.blocking
            continue
        schedule = step_schedule(key, route.model.spec)
        if schedule is not None:
            state.schedules[key] = schedule
    for window in _maintenance_resources(config, state.diagnostics):
        state.resources[window.address] = window
    state.diagnostics.extend(config.notices)
    state.diagnostics.sort()
    return state


def _maintenance_resources(config: Config, diagnostics: list[Diagnostic]) -> list[Resource]:
    """A resource per maintenance window, with the canaries its selector matches now (so the
    plan shows which canaries a window covers, and the server needs no labels)."""
    resources = []
    for key, window in config.maintenance.items():
        selector = window.model.spec.canaries
        selected = sorted(
            canary_key
            for canary_key, canary in config.canaries.items()
            if selector.matches(
                canary.model.metadata.namespace,
                canary.model.metadata.name,
                canary.model.metadata.labels,
            )
        )
        if not selected:
            diagnostics.append(
                window.diagnostic(("spec", "canaries"), "selects no canary", "warning")
            )
        spec = {**dump(window.model.spec), "selected": selected}
        if not window.model.spec.recurring:
            spec.pop("timezone", None)  # the default, read by nothing for a one-off window
        resources.append(
            Resource("Maintenance", key, spec, fingerprint(spec), source=window.location())
        )
    return resources


def _drive_diagnostics(route: Located[RouteDocument], decision: DriveDecision) -> list[Diagnostic]:
    found = []
    if not decision.driven:
        message = "not driven on the gateway (never put on nginx, no canary run): " + "; ".join(
            decision.blocking
        )
        found.append(route.diagnostic((), message, "warning"))
    if decision.unapplied:
        message = (
            f"served on nginx without {', '.join(decision.unapplied)} (features of the gateway "
            "project that our nginx data plane does not reproduce)"
        )
        found.append(route.diagnostic((), message, "notice"))
    return found
