"""Canary selectors: which canaries a document applies to, by name, namespace and labels."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase

from pydantic import Field

from schemas.base import Problem, Slug, StrictModel


class CanarySelector(StrictModel):
    """Canaries chosen by name globs, namespaces and labels; every given part must match."""

    names: list[str] = Field(
        default_factory=list,
        description="Canary name globs (`*`, `?`, `[...]`), matched against metadata.name; "
        "any one matching is enough. Empty: any name.",
    )
    namespaces: list[Slug] = Field(
        default_factory=list, description="Canary namespaces; empty: any namespace."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels every selected canary carries with exactly these values.",
    )

    def problems(self) -> Iterator[Problem]:
        if not (self.names or self.namespaces or self.labels):
            # An empty selector selecting the whole fleet is too easy to write by accident.
            yield (
                (),
                "selects nothing: give names, namespaces or labels (names: ['*'] selects "
                "every canary)",
            )
        for index, pattern in enumerate(self.names):
            if not pattern.strip():
                yield (("names", index), "empty pattern")

    def matches(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether a canary with this identity is selected.

        Args:
            namespace: the canary's metadata.namespace.
            name: its metadata.name.
            labels: its metadata.labels.
        """
        if self.names and not any(fnmatchcase(name, p.strip()) for p in self.names):
            return False
        if self.namespaces and namespace not in self.namespaces:
            return False
        return all(labels.get(key) == value for key, value in self.labels.items())
