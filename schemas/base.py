"""Shared building blocks of every document kind: the strict base model and metadata."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.durations import format_duration, parse_duration
from schemas.limits import (
    MAX_HEADER_NAME_CHARS,
    MAX_HEADER_VALUE_CHARS,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    limit_hint,
)

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

    def separately(self, problems: Iterator[Problem]) -> Iterator[Problem]:
        """Rules that the rules after them do not need (one check's among a canary's): in a
        model rebuilt around fields that failed validation (`schemas.partial`), a rule of
        these needing such a field ends only these."""
        return problems


def slug_problem(value: str) -> str | None:
    """Why `value` is not a name of a Region, Canary, Route... (a slug), or None."""
    if _SLUG.fullmatch(value):  # fullmatch: `$` alone lets a trailing newline through
        return None
    return (
        f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
        "starting and ending with a letter or digit, at most 63 characters"
    )


def _check_slug(value: str) -> str:
    if problem := slug_problem(value):
        raise ValueError(problem)
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


def _check_timeout(value: str) -> str:
    seconds = parse_duration(value)
    if not MIN_TIMEOUT_SECONDS <= seconds <= MAX_TIMEOUT_SECONDS:
        low, high = format_duration(MIN_TIMEOUT_SECONDS), format_duration(MAX_TIMEOUT_SECONDS)
        raise ValueError(
            f"timeout {value!r} is out of range: allowed {low} to {high}; "
            + limit_hint("check timeout", f"{low} to {high}")
        )
    return value


# A check's timeout: a duration the agent can wait, neither 0 (every run would fail at once)
# nor longer than an hour.
Timeout = Annotated[
    str,
    AfterValidator(_check_timeout),
    Field(
        description=f"A duration from {format_duration(MIN_TIMEOUT_SECONDS)} to "
        f"{format_duration(MAX_TIMEOUT_SECONDS)}, e.g. '5s'.",
        json_schema_extra={
            "pattern": r"^\s*(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|us|µs|μs|s|m|h))+\s*$"
        },
    ),
]

# RFC 9110 `token`: the characters a header field name may hold.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Control characters other than tab (CR and LF above all: they would end the header on the
# wire and let a value inject others) are forbidden in field values.
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_header_name(value: str) -> str:
    if len(value) > MAX_HEADER_NAME_CHARS:
        raise ValueError(
            f"a header name is at most {MAX_HEADER_NAME_CHARS} characters (got {len(value)}); "
            + limit_hint("header name length", MAX_HEADER_NAME_CHARS)
        )
    if not _HEADER_NAME.fullmatch(value):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(
            f"{shown!r} is not a valid header name: use letters, digits and "
            "!#$%&'*+-.^_`|~ (no spaces, colons, CR or LF), as HTTP requires"
        )
    return value


def _check_header_value(value: str) -> str:
    if len(value) > MAX_HEADER_VALUE_CHARS:
        raise ValueError(
            f"a header value is at most {MAX_HEADER_VALUE_CHARS} characters "
            f"(got {len(value)}); " + limit_hint("header value length", MAX_HEADER_VALUE_CHARS)
        )
    found = _HEADER_VALUE_FORBIDDEN.search(value)
    if found is not None:
        # The value is not shown: header values are often credentials.
        raise ValueError(
            f"a header value may not contain control characters (CR, LF, NUL, ...): found "
            f"{found.group()!r} at character {found.start() + 1}"
        )
    return value


HeaderName = Annotated[
    str,
    AfterValidator(_check_header_name),
    Field(min_length=1, json_schema_extra={"maxLength": MAX_HEADER_NAME_CHARS}),
]
HeaderValue = Annotated[
    str,
    AfterValidator(_check_header_value),
    Field(json_schema_extra={"maxLength": MAX_HEADER_VALUE_CHARS}),
]


def _check_text(value: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(
            f"at most {MAX_TEXT_CHARS} characters (got {len(value)}); "
            + limit_hint("short text length", MAX_TEXT_CHARS)
        )
    return value


# Short human text shown on the site: a display name, a location.
Text = Annotated[
    str, AfterValidator(_check_text), Field(json_schema_extra={"maxLength": MAX_TEXT_CHARS})
]


# Agents are named as Kubernetes names objects (an RFC 1123 subdomain), so `eu-west.prod-1`
# is a valid agent name, as in canary-checker; other kinds keep the slug.
AGENT_NAME_PATTERN = (
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)


def _check_agent_name(value: str) -> str:
    if not _AGENT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid agent name: use lowercase letters, digits, '-' and '.', "
            "each dot-separated part starting and ending with a letter or digit and at most "
            "63 characters, 253 characters in all"
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


# `${name}` and `${env:NAME}` references, which the agent fills in before a request.
_REFERENCE = re.compile(r"\$\{[^}]*\}")


def url_problem(url: str) -> str | None:
    """What is wrong with an http(s) URL, or None: its scheme, host and port as a client
    would read them (a port of 70000 or `abc` is refused here, not at the first probe).
    A `${name}` or `${env:NAME}` reference stands for a part of it: it is checked with a
    placeholder there."""
    quoted, filled = repr(url), _REFERENCE.sub("x", url)
    if any(character.isspace() for character in filled):
        return f"{quoted} has a space in it"
    try:
        parts = urlsplit(filled)
        port = parts.port
    except ValueError as error:
        if "port" in str(error).lower():
            return f"{quoted}: the port must be a number from 1 to 65535"
        return f"{quoted} is not a URL ({error})"
    if parts.scheme not in ("http", "https"):
        return f"{quoted} is not an http:// or https:// URL"
    if not parts.hostname:
        return f"{quoted} has no host"
    if port == 0:
        return f"{quoted}: the port must be a number from 1 to 65535"
    return None


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
