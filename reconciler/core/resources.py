"""Resources: the compiled, addressable units of desired state, with content fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

ResourceKind = Literal[
    "Region", "Agent", "Canary", "DerivedCanary", "Route", "Receiver", "AlertRouting", "Maintenance"
]

ADDRESS_PREFIX: dict[str, str] = {
    "Region": "region",
    "Agent": "agent",
    "Canary": "canary",
    "DerivedCanary": "derived_canary",
    "Route": "route",
    "Receiver": "receiver",
    "AlertRouting": "alert_routing",
    "Maintenance": "maintenance",
}
KIND_ORDER: dict[str, int] = {kind: index for index, kind in enumerate(ADDRESS_PREFIX)}


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def fingerprint(*parts: Any) -> str:
    """A content hash of plain data: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else canonical_json(part))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def address_of(kind: str, name: str) -> str:
    """The plan address of a resource, e.g. `derived_canary.monitoring/api@eu-west-1`."""
    return f"{ADDRESS_PREFIX[kind]}.{name}"


@dataclass(frozen=True)
class Resource:
    """One unit of desired state.

    `fingerprint` changes exactly when `spec` does. For routes, `run_fingerprint` covers only
    what restarts a canary run (traffic split and canary spec), so a label edit does not.
    """

    kind: ResourceKind
    name: str
    spec: dict[str, Any]
    fingerprint: str
    parent: str | None = None
    agent: str | None = None
    run_fingerprint: str | None = None
    source: str | None = None

    @property
    def address(self) -> str:
        return address_of(self.kind, self.name)


@dataclass(frozen=True)
class ResourceHeader:
    """What a plan needs to know of a current resource before it looks at its spec."""

    fingerprint: str
    run_fingerprint: str | None = None


def header_of(resource: Resource) -> ResourceHeader:
    """The header of a full resource."""
    return ResourceHeader(resource.fingerprint, resource.run_fingerprint)
