"""The plan as data: typed changes and canary runs, rendered and applied elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.resources import ResourceKind, address_of
from reconciler.core.weights import StepSchedule

FORMAT_VERSION = "1.0"

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class StateRef:
    """Which state a plan was made against: its serial and lineage."""

    serial: int
    lineage: str


@dataclass(frozen=True)
class Revision:
    """The config revision a plan comes from."""

    sha: str | None
    ref: str | None
    author: str | None
    committed_at: str | None
    message: str | None = None
    dirty: bool = False

    @property
    def label(self) -> str:
        if self.sha is None:
            return "working tree"
        short = self.sha[:12]
        return f"{short} with uncommitted changes" if self.dirty else short


@dataclass(frozen=True)
class FieldChange:
    """One changed field: its path, the value before and the value after (None = absent)."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One resource the plan creates, updates or deletes, and why."""

    kind: ResourceKind
    name: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    fingerprint: str | None = None
    run_fingerprint: str | None = None
    parent: str | None = None
    agent: str | None = None
    fields: tuple[FieldChange, ...] = ()

    @property
    def address(self) -> str:
        return address_of(self.kind, self.name)


@dataclass(frozen=True)
class CanaryRun:
    """A canary deployment run that applying the plan starts."""

    route: str
    reason: str
    run_fingerprint: str
    schedule: StepSchedule
    # The route's run this one abandons (`checkout#18, progressing at step 2 of 4`): it is
    # marked superseded, not rolled back, and the route goes to this run's weights.
    replaces: str | None = None


@dataclass(frozen=True)
class Summary:
    """How many resources a plan adds, changes and destroys."""

    add: int
    change: int
    destroy: int

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.destroy)


@dataclass(frozen=True)
class Plan:
    """Everything applying a revision would do to a state."""

    state: StateRef | None
    revision: Revision | None
    changes: tuple[Change, ...] = ()
    canary_runs: tuple[CanaryRun, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)
    base: Revision | None = None  # set when planned against another ref, not a state file
    # Routes kept off the gateway, with the reasons (see core/drive.py).
    not_driven: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def summary(self) -> Summary:
        actions = [change.action for change in self.changes]
        return Summary(actions.count("create"), actions.count("update"), actions.count("delete"))

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)
