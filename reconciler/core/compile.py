"""Compile a loaded configuration into desired state: resources and canary step schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Config, Located
from reconciler.core.resources import Resource, fingerprint
from reconciler.core.selector import LOCAL, select_agents
from reconciler.core.weights import StepSchedule, step_schedule
from schemas.base import dump
from schemas.canary import CanaryDocument

DEFAULT_LOCAL_REGION = "default"


@dataclass(frozen=True)
class DesiredState:
    """Everything one revision of the config repository asks for."""

    resources: dict[str, Resource] = field(default_factory=dict)
    schedules: dict[str, StepSchedule] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _derived(
    canary: Located[CanaryDocument],
    spec: dict[str, Any],
    spec_fingerprint: str,
    agent: str,
    region: str,
) -> Resource:
    name = f"{canary.key}@{agent}"
    derived_spec = {"parent": canary.key, "agent": agent, "region": region, **spec}
    return Resource(
        "DerivedCanary",
        name,
        derived_spec,
        fingerprint(spec_fingerprint, agent, region),
        parent=canary.key,
        agent=agent,
        source=canary.location(),
    )


def compile_config(config: Config, local_region: str = DEFAULT_LOCAL_REGION) -> DesiredState:
    """Compile desired state: every document, one derived canary per (canary, matched agent),
    and each route's canary step schedule.

    Args:
        config: a loaded configuration without errors.
        local_region: the control plane's own region; `local` derived canaries run there.

    Returns:
        The resources by address, the step schedules by route, and warnings.
    """
    state = DesiredState()
    for kind, documents in (("Region", config.regions), ("Agent", config.agents)):
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

    for key, canary in config.canaries.items():
        spec = dump(canary.model.spec)
        parent = Resource("Canary", key, spec, fingerprint(spec), source=canary.location())
        state.resources[parent.address] = parent
        derived_base = {k: v for k, v in spec.items() if k != "agentSelector"}
        base_fingerprint = fingerprint(derived_base)
        selection = select_agents(canary.model.spec.agentSelector, eligible)
        targets = [(agent, region_of[agent]) for agent in selection.agents]
        if selection.local and local_enabled:
            targets.append((LOCAL, local_region))
        if not targets:
            state.diagnostics.append(
                canary.diagnostic(
                    ("spec", "agentSelector"),
                    "matches no enabled agent: this canary will not run anywhere",
                    "warning",
                )
            )
        for agent, region in targets:
            derived = _derived(canary, derived_base, base_fingerprint, agent, region)
            state.resources[derived.address] = derived

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
        schedule = step_schedule(key, route.model.spec)
        if schedule is not None:
            state.schedules[key] = schedule
    return state
