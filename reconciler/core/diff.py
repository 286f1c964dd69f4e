"""Diff desired state against current state into a Plan (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.core.compile import DesiredState
from reconciler.core.plan import CanaryRun, Change, FieldChange, Plan, Revision, StateRef
from reconciler.core.resources import KIND_ORDER, Resource, ResourceHeader

# Fetch full current resources by address; only called for resources whose fingerprint moved.
FetchResources = Callable[[Iterable[str]], Mapping[str, Resource]]


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """Key a list of mappings by their `name` when every item has a distinct one."""
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return dict(zip(names, items, strict=True))  # type: ignore[arg-type]
    return None


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences between two plain-data values, by dotted path.

    Lists of named items (checks, traffic groups) are compared by name, so inserting a
    check shows as one added check rather than every later check changing.
    """
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}.{key}" if path else str(key)
            found += field_changes(before.get(key), after.get(key), child)
        return found
    if isinstance(before, list) and isinstance(after, list):
        keyed_before, keyed_after = _keyed(before), _keyed(after)
        if keyed_before is not None and keyed_after is not None:
            found = []
            order = list(keyed_before) + [n for n in keyed_after if n not in keyed_before]
            for name in order:
                found += field_changes(
                    keyed_before.get(name), keyed_after.get(name), f"{path}[{name}]"
                )
            return found
    return [FieldChange(path, before, after)]


def flatten(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Leaf values of plain data by dotted path, naming list items by `name` when they
    have one; empty lists and mappings are left out."""
    if isinstance(value, dict):
        found: list[tuple[str, Any]] = []
        for key, child in value.items():
            found += flatten(child, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(value, list) and value and any(isinstance(i, (dict, list)) for i in value):
        keyed = _keyed(value)
        items = keyed.items() if keyed is not None else enumerate(value)
        found = []
        for key, child in items:
            found += flatten(child, f"{path}[{key}]")
        return found
    if value in ([], {}):
        return []
    return [(path, value)]


def _create_reason(resource: Resource, current: Mapping[str, ResourceHeader]) -> str:
    if resource.kind != "DerivedCanary":
        return "added to the config"
    if f"canary.{resource.parent}" not in current:
        return f"new canary, runs on agent {resource.agent}"
    if resource.agent != "local" and f"agent.{resource.agent}" not in current:
        return f"new agent {resource.agent} matches the agentSelector"
    return f"agent {resource.agent} now matches the agentSelector"


def _delete_reason(gone: Resource, desired: DesiredState) -> str:
    if gone.kind != "DerivedCanary":
        return "removed from the config"
    if f"canary.{gone.parent}" not in desired.resources:
        return "its canary was removed"
    if gone.agent == "local":
        return "the control plane no longer runs it ('local' not selected or region disabled)"
    agent = desired.resources.get(f"agent.{gone.agent}")
    if agent is None:
        return f"agent {gone.agent} was removed"
    if not agent.spec.get("enabled", True):
        return f"agent {gone.agent} is disabled"
    region = desired.resources.get(f"region.{agent.spec.get('region')}")
    if region is not None and not region.spec.get("enabled", True):
        return f"region {region.name} of agent {gone.agent} is disabled"
    return f"agent {gone.agent} no longer matches the agentSelector"


def _update_reason(resource: Resource, fields: tuple[FieldChange, ...]) -> str:
    if resource.kind == "DerivedCanary":
        if any(change.path == "region" for change in fields):
            return f"agent {resource.agent} moved region"
        return f"canary {resource.parent} changed"
    return "changed in the config"


def _change(
    resource: Resource,
    action: str,
    before: Resource | None,
    reason: str,
    fields: tuple[FieldChange, ...] = (),
) -> Change:
    return Change(
        resource.kind,
        resource.name,
        action,  # type: ignore[arg-type]
        before.spec if before else None,
        resource.spec,
        reason,
        resource.fingerprint,
        resource.run_fingerprint,
        resource.parent,
        resource.agent,
        fields,
    )


def _sort_key(change: Change) -> tuple[int, str]:
    return (KIND_ORDER[change.kind], change.name)


def plan_changes(
    desired: DesiredState,
    current: Mapping[str, ResourceHeader],
    fetch: FetchResources,
    state: StateRef | None = None,
    revision: Revision | None = None,
    base: Revision | None = None,
    open_runs: Mapping[str, str] | None = None,
) -> Plan:
    """Plan what turns the current state into the desired state.

    Args:
        desired: the compiled desired state.
        current: headers of the current resources by address.
        fetch: reads full current resources for the addresses whose fingerprint changed.
        state: the serial and lineage planned against, None for an empty or base state.
        revision: the config revision being planned.
        base: the revision planned against, when that is a ref rather than a state file.
        open_runs: by route, its run that a new run would abandon (pending, progressing or
            paused), as people read it.

    Returns:
        The plan: creates, updates and deletes, the canary runs it starts, and warnings.
    """
    changes: list[Change] = []
    runs: list[CanaryRun] = []
    moved = [
        address
        for address, resource in desired.resources.items()
        if address in current and current[address].fingerprint != resource.fingerprint
    ]
    removed = [address for address in current if address not in desired.resources]
    befores = fetch(moved + removed) if moved or removed else {}
    for address, resource in desired.resources.items():
        header = current.get(address)
        if header is None:
            changes.append(_change(resource, "create", None, _create_reason(resource, current)))
        elif address in befores:
            before = befores[address]
            fields = tuple(field_changes(before.spec, resource.spec))
            reason = _update_reason(resource, fields)
            changes.append(_change(resource, "update", before, reason, fields))
        if resource.kind == "Route" and resource.name in desired.schedules:
            previous = header.run_fingerprint if header else None
            if previous != resource.run_fingerprint:
                reason = "new route" if header is None else "traffic split or canary changed"
                runs.append(
                    CanaryRun(
                        resource.name,
                        reason,
                        resource.run_fingerprint or "",
                        desired.schedules[resource.name],
                        (open_runs or {}).get(resource.name),
                    )
                )
    for address in removed:
        gone = befores[address]
        changes.append(
            Change(
                gone.kind,
                gone.name,
                "delete",
                gone.spec,
                None,
                _delete_reason(gone, desired),
                parent=gone.parent,
                agent=gone.agent,
            )
        )
    changes.sort(key=_sort_key)
    return Plan(
        state,
        revision,
        tuple(changes),
        tuple(runs),
        tuple(desired.diagnostics),
        base,
        tuple(sorted(desired.not_driven.items())),
    )
