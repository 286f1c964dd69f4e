"""Shared building blocks of every document kind: the strict base model and metadata."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.durations import parse_duration

API_VERSION: Final = "canary-reconciler/v1"
CANARY_CHECKER_API_VERSION: Final = "canaries.flanksource.com/v1"

SLUG_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_SLUG = re.compile(SLUG_PATTERN)

# A rule problem: the field path inside the document and what is wrong there.
Problem = tuple[tuple[str | int, ...], str]


class StrictModel(BaseModel):
    """Base of every model: unknown keys are errors, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    def problems(self) -> Iterator[Problem]:
        """Yield rule violations that span several fields, each with its exact field path."""
        return iter(())


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Slug = Annotated[
    str, AfterValidator(_check_slug), Field(json_schema_extra={"pattern": SLUG_PATTERN})
]
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(
        description="A duration such as '500ms', '30s', '5m' or '1h30m'.",
        json_schema_extra={
            "pattern": r"^\s*(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|us|µs|μs|s|m|h))+)\s*$"
        },
    ),
]


# Agents are named as Kubernetes names objects (an RFC 1123 subdomain), so `eu-west.prod-1`
# is a valid agent name, as in canary-checker; other kinds keep the slug.
AGENT_NAME_PATTERN = (
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)


def _check_agent_name(value: str) -> str:
    if not _AGENT_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid agent name: use lowercase letters, digits, '-' and '.', "
            "each dot-separated part starting and ending with a letter or digit"
        )
    return value


AgentName = Annotated[
    str, AfterValidator(_check_agent_name), Field(json_schema_extra={"pattern": AGENT_NAME_PATTERN})
]


class Metadata(StrictModel):
    """Identity of a document: a slug name, an optional namespace, labels and annotations."""

    name: Slug
    namespace: Slug = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


def nested(prefix: tuple[str | int, ...], problems: Iterator[Problem]) -> Iterator[Problem]:
    """Prefix the field paths of problems found in a sub-model."""
    for path, message in problems:
        yield (prefix + path, message)


def dump(model: BaseModel) -> dict[str, Any]:
    """The canonical plain-data form of a model: JSON types, field aliases, no nulls."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class AgentMetadata(Metadata):
    """An Agent's identity: its name may contain dots (`eu-west.prod-1`)."""

    name: AgentName
