"""The Region kind: a place agents probe from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import API_VERSION, Metadata, StrictModel, Text


class RegionSpec(StrictModel):
    """What a region is: a display name, a location and whether it is enabled."""

    displayName: Text | None = Field(default=None, description="Human name shown on the site.")
    location: Text | None = Field(default=None, description="Free text, e.g. 'Frankfurt, DE'.")
    enabled: bool = Field(
        default=True,
        description="A disabled region's agents receive no checks; its history is kept.",
    )


class RegionDocument(StrictModel):
    """A `kind: Region` document."""

    apiVersion: Literal["canary-reconciler/v1"] = API_VERSION
    kind: Literal["Region"] = "Region"
    metadata: Metadata
    spec: RegionSpec = Field(default_factory=RegionSpec)
