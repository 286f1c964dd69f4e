"""The Python API behind the CLI: load a revision, plan it against state, apply it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.collector import collector_paused
from reconciler.core.compile import (
    DEFAULT_LOCAL_REGION,
    CompileCache,
    DesiredState,
    compile_config,
)
from reconciler.core.diagnostics import Diagnostic
from reconciler.core.diff import plan_changes
from reconciler.core.documents import SourceFile
from reconciler.core.load import LoadResult, ParseCache, load_config
from reconciler.core.plan import Plan, Revision, StateRef
from reconciler.core.resources import ResourceHeader, header_of
from reconciler.sources.gitrepo import GitSourceError, files_at, find_repository, worktree_revision
from reconciler.sources.worktree import read_worktree

if TYPE_CHECKING:
    # DuckDB and Arrow are imported by the methods that open a state file: `validate` and
    # `plan --base` never do, and start faster without them.
    from reconciler.store.db import Connection
    from reconciler.store.resources import ApplyResult


class SourceError(Exception):
    """The config repository or ref cannot be read."""


@dataclass(frozen=True)
class Settings:
    """What planning needs beyond the repository."""

    local_region: str = DEFAULT_LOCAL_REGION
    lock_timeout: float = 10.0


@dataclass
class Loaded:
    """A loaded and compiled revision (desired is None when the load has errors)."""

    result: LoadResult
    revision: Revision
    desired: DesiredState | None
    files: int
    parsed: int

    @property
    def diagnostics(self) -> list[Diagnostic]:
        extra = self.desired.diagnostics if self.desired else []
        return sorted(set(self.result.diagnostics + extra))

    @property
    def ok(self) -> bool:
        return self.desired is not None


@dataclass
class Session:
    """Keeps parsed files, compiled canaries and state headers between plans, so a re-plan
    after one edit parses and compiles only what changed."""

    settings: Settings = field(default_factory=Settings)
    cache: ParseCache = field(default_factory=dict)
    compiled: CompileCache = field(default_factory=dict)
    _headers: tuple[StateRef, dict[str, ResourceHeader]] | None = None

    def load(self, repo: Path, ref: str | None = None) -> Loaded:
        """Load and compile the working tree of `repo`, or `ref` of its git repository.

        Raises:
            SourceError: the directory, repository or ref cannot be read, or has no YAML.
        """
        if ref is None:
            try:
                files = read_worktree(repo)
            except FileNotFoundError as error:
                raise SourceError(str(error)) from error
            location = find_repository(repo)
            revision = (
                worktree_revision(location)
                if location
                else Revision(None, None, None, None, dirty=False)
            )
        else:
            location = find_repository(repo)
            if location is None:
                raise SourceError(f"{repo} is not in a git repository, so --ref cannot be used")
            try:
                files, revision = files_at(location, ref)
            except GitSourceError as error:
                raise SourceError(str(error)) from error
        if all(f.hidden for f in files):
            where = f"{repo} at {ref}" if ref else str(repo)
            hidden = f" ({len(files)} under hidden paths, never loaded)" if files else ""
            raise SourceError(
                f"no YAML files found in {where}{hidden}: refusing to plan an empty "
                "configuration (it would delete everything); check --repo"
            )
        return self.load_files(files, revision)

    def load_files(self, files: list[SourceFile], revision: Revision) -> Loaded:
        """Load and compile a set of files, parsing only those not seen before."""
        with collector_paused():
            before = len(self.cache)
            result = load_config(files, self.cache)
            parsed = len(self.cache) - before
            # Keep only this revision's files: edits would otherwise pile up in memory.
            current = {(f.path, f.blob) for f in files}
            for stale in [key for key in self.cache if key not in current]:
                del self.cache[stale]
            desired = (
                compile_config(result.config, self.settings.local_region, self.compiled)
                if result.ok
                else None
            )
            if desired is not None:
                # Load warnings (accepted-but-unused fields, ...) are shown by plans too.
                warnings = [d for d in result.diagnostics if d.severity == "warning"]
                desired = replace(desired, diagnostics=warnings + desired.diagnostics)
        return Loaded(result, revision, desired, len(files), parsed)

    def _current_headers(self, connection: Connection) -> dict[str, ResourceHeader]:
        """The state's resource headers, read again only when its serial or lineage moved."""
        from reconciler.store.db import state_ref
        from reconciler.store.resources import read_headers

        ref = state_ref(connection)
        if self._headers is None or self._headers[0] != ref:
            self._headers = (ref, read_headers(connection))
        return self._headers[1]

    def plan_against_base(self, loaded: Loaded, repo: Path, base_ref: str) -> Plan:
        """Plan `loaded` against the desired state of another ref (no state file needed).

        Raises:
            SourceError: the base ref cannot be read or is itself invalid.
        """
        assert loaded.desired is not None
        base = self.load(repo, base_ref)
        if base.desired is None:
            raise SourceError(
                f"the base ref {base_ref} does not load: {len(base.result.diagnostics)} "
                f"error(s), first: {base.diagnostics[0].format()}"
            )
        current = base.desired.resources
        headers = {address: header_of(r) for address, r in current.items()}
        return plan_changes(
            loaded.desired,
            headers,
            lambda addresses: {a: current[a] for a in addresses},
            None,
            loaded.revision,
            base.revision,
        )

    def plan_against_state(self, loaded: Loaded, state: Path) -> Plan:
        """Plan `loaded` against a state file, read-only; a missing file is an empty state.

        Raises:
            StateError: the file is locked or not a state file.
        """
        from reconciler.store.db import open_state

        assert loaded.desired is not None
        connection = open_state(state, read_only=True, lock_timeout=self.settings.lock_timeout)
        if connection is None:
            return plan_changes(loaded.desired, {}, lambda _: {}, None, loaded.revision)
        with connection:
            return self._plan_on(loaded, connection)

    def _plan_on(self, loaded: Loaded, connection: Connection) -> Plan:
        from reconciler.store.db import state_ref
        from reconciler.store.deployments import open_runs
        from reconciler.store.resources import fetch_resources

        assert loaded.desired is not None
        return plan_changes(
            loaded.desired,
            self._current_headers(connection),
            lambda addresses: fetch_resources(connection, addresses),
            state_ref(connection),
            loaded.revision,
            open_runs=open_runs(connection),
        )

    def apply(
        self,
        loaded: Loaded,
        state: Path,
        now: Callable[[], datetime],
        approve: Callable[[Plan], bool],
    ) -> tuple[Plan, ApplyResult | None]:
        """Plan `loaded` under the state's write lock and apply it if `approve` says so.

        Returns:
            The plan, and the apply result (None when not approved).

        Raises:
            StateError: the state file is locked or unusable.
        """
        from reconciler.store.db import open_state, remove_state, state_is_empty

        assert loaded.desired is not None
        existed = state.exists()
        connection = open_state(state, lock_timeout=self.settings.lock_timeout)
        assert connection is not None
        try:
            with connection:
                return self.apply_on(loaded, connection, now, approve)
        finally:
            if not existed and state_is_empty(state):
                remove_state(state)

    def apply_on(
        self,
        loaded: Loaded,
        connection: Connection,
        now: Callable[[], datetime],
        approve: Callable[[Plan], bool] = lambda _: True,
    ) -> tuple[Plan, ApplyResult | None]:
        """Plan `loaded` against an open, writable state connection and apply it if approved."""
        from reconciler.store.resources import apply_plan

        plan = self._plan_on(loaded, connection)
        if plan.changes and not approve(plan):
            return plan, None
        return plan, apply_plan(connection, plan, now())

    def apply_saved(self, plan: Plan, state: Path, now: Callable[[], datetime]) -> ApplyResult:
        """Apply a saved plan exactly, refusing it when the state moved since.

        Raises:
            StalePlan: the state's serial or lineage differs from the plan's.
            StateError: the state file is locked or unusable.
        """
        from reconciler.store.db import open_state
        from reconciler.store.resources import apply_plan

        connection = open_state(state, lock_timeout=self.settings.lock_timeout)
        assert connection is not None
        with connection:
            return apply_plan(connection, plan, now())
