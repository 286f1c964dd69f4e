"""The Agent kind: a probe process that runs checks from one region."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from schemas.base import API_VERSION, AgentMetadata, Problem, Slug, StrictModel

RESERVED_AGENT_NAMES = frozenset({"local"})


class AgentSpec(StrictModel):
    """Where an agent runs and whether it is enabled. Its token is never in git."""

    region: Slug = Field(description="Name of the Region this agent probes from.")
    enabled: bool = Field(default=True, description="A disabled agent receives no checks.")
    labels: dict[str, str] = Field(default_factory=dict)


class AgentDocument(StrictModel):
    """A `kind: Agent` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Agent"] = "Agent"
    metadata: AgentMetadata
    spec: AgentSpec

    def problems(self) -> Iterator[Problem]:
        if self.metadata.name in RESERVED_AGENT_NAMES:
            yield (
                ("metadata", "name"),
                f"{self.metadata.name!r} is reserved for the control plane's own agent",
            )
