"""The control plane: follows the config repository, serves agents, takes their results."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from agent.metrics import Metrics
from reconciler.core.agentconfig import AgentConfig, agent_access, agent_configs
from reconciler.core.documents import SourceFile
from reconciler.core.ingest import IngestPolicy, validate_rows
from reconciler.core.maintenance import MaintenanceIndex
from reconciler.core.plan import Revision, Summary
from reconciler.core.probe_metrics import ProbeLevel
from reconciler.core.probe_metrics import render as render_probes
from reconciler.core.refusal import RequestRefused
from reconciler.core.resources import Resource
from reconciler.server.ingestion import IngestQueue
from reconciler.server.settings import SECRETS, ServeSettings
from reconciler.server.supervise import Supervisor
from reconciler.session import Loaded, Session, Settings
from reconciler.sources.follow import ConfigSource
from reconciler.sources.gitrepo import GitSourceError, commit_files, worktree_revision
from reconciler.store.handle import StateHandle
from reconciler.store.probes import latest_runs
from reconciler.store.refusals import Refusal, clear_refusal, record_refusal
from reconciler.store.reports import Reports
from reconciler.store.resources import all_resources, list_revisions
from reconciler.store.results import results_per_agent, results_per_region
from reconciler.store.tokens import (
    agent_of,
    mint_token,
    revoke_token,
    token_hashes,
    token_matches,
)

Gauge = tuple[str, str, tuple[tuple[str, str], ...], float]
log = logging.getLogger("reconciler.server.main")
# Environment variables whose values must never show in a status or error message.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)


# Per-check series are read from the state at most this often (seconds).
PROBE_CACHE_SECONDS = 5.0


@dataclass
class Attempt:
    """One reconcile: which revision, when, what it did or why it failed."""

    trigger: str
    at: datetime
    revision: Revision | None = None
    applied: bool = False
    summary: Summary | None = None
    changed: bool = False
    errors: list[str] = field(default_factory=list)
    # An exception, not a config error: counted as a failure of the reconcile loop.
    crashed: bool = False


@dataclass
class AgentStatus:
    """What the control plane saw of an agent since it started."""

    last_pull: datetime | None = None
    config_served: str | None = None
    last_results: datetime | None = None


class ControlPlane:
    """Reconciles commits into the state, builds agent configs and ingests results."""

    def __init__(
        self,
        settings: ServeSettings,
        state: StateHandle,
        source: ConfigSource,
        environ: Mapping[str, str],
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.state = state
        self.reports = Reports(state)
        self.source = source
        self.environ = environ
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.help["ingest_rows_maintenance_total"] = (
            "Result rows marked as run in a maintenance window (duplicates included)."
        )
        # Every background loop of the server reports its failures here.
        self.loops = Supervisor(self.metrics, clock, self._secrets)
        self.session = Session(Settings(local_region=settings.local_region))
        self.ingest_queue = IngestQueue(state, clock, self.metrics)
        self.policy = IngestPolicy(
            skew=timedelta(seconds=settings.clock_skew),
            max_age=timedelta(seconds=settings.max_result_age),
        )
        self.resources: dict[str, Resource] = {}
        # The served revision's maintenance windows, by derived canary (core/maintenance.py).
        self.maintenance = MaintenanceIndex(())
        self.configs: dict[str, AgentConfig] = {}
        self.access: dict[str, str | None] = {}
        self.agents: dict[str, AgentStatus] = {}
        self.tokens: dict[str, str] = {}
        self.current: Revision | None = None
        self.last_attempt: Attempt | None = None
        self.on_publish: list[Callable[[], None]] = []
        # Set (and replaced) whenever what some agent may pull changes: configs, who may
        # pull. Long polls of `GET /api/agent/targets` wait on it (http/agent_api.py).
        self._pulls_changed = asyncio.Event()
        self.pulls_released = False  # stopping: held pulls are answered, none held any more
        self._probe_cache: tuple[float, str] | None = None  # (monotonic time, series text)
        # Gauges other parts of the server add to /metrics (e.g. open incidents).
        self.gauges: list[Callable[[], list[Gauge]]] = [self.loops.gauges]
        self.ready = asyncio.Event()
        # Bumped whenever result rows are stored: controllers read metrics again only then.
        self.results_version = 0
        self._reconcile_lock = asyncio.Lock()
        # The files (path, blob) of the last applied load: a snapshot with the same files
        # and commit needs no second parse (e.g. the watcher seeing an operator commit).
        self._applied_files: frozenset[tuple[str, str]] | None = None
        self._refusal_stored = True  # unknown after a restart: cleared by the first apply

    def _secrets(self) -> Iterator[str]:
        for name in SECRETS:
            value = getattr(self.settings, name)
            if value:
                yield value
        for name, value in self.environ.items():
            if _SECRET_NAME.search(name):
                yield value

    # -- lifecycle -------------------------------------------------------------------------

    async def start_serving(self) -> None:
        """Serve what the state holds at once; the first reconcile follows (readyz waits).

        A stored revision whose agent configs cannot be built (written by an older version
        that let a bad value through) is reported, and nothing is served until the next
        revision applies: the server starts either way.
        """
        self.ingest_queue.start(self.loops)
        self.tokens = await self.state.read(token_hashes)
        resources = await self.state.read(all_resources)
        revisions = await self.state.read(lambda c: list_revisions(c, 1))
        try:
            configs = agent_configs(resources, self.environ)
        except Exception as error:  # noqa: BLE001 - reported; the reconcile loop goes on
            self.loops.failed("reconcile", error, "publishing the stored revision")
            return
        if revisions:
            row = revisions[0]
            self.current = Revision(row.sha, None, row.author, None, row.message)
        self._publish(resources, configs)

    async def stop(self) -> None:
        """Store every result already accepted, then release the state file."""
        await self.ingest_queue.drain()
        self.state.close()

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, trigger: str) -> Attempt:
        """Fetch, load, plan and apply the repository's current revision.

        An invalid revision is not applied: the last good one keeps serving, and the errors
        show in the status and the logs. A snapshot whose commit and files are those last
        applied is not loaded again.
        """
        async with self._reconcile_lock:
            attempt = Attempt(trigger, self.clock())
            try:
                await asyncio.to_thread(self.source.refresh)
                files, revision = await asyncio.to_thread(self.source.snapshot)
                attempt.revision = revision
                key = frozenset((f.path, f.blob) for f in files)
                if self._already_applied(key, revision):
                    attempt.applied = True
                    return await self._settle(attempt)
                self.metrics.count("config_loads_total")
                loaded = await asyncio.to_thread(self.session.load_files, files, revision)
            except Exception as error:  # noqa: BLE001 - reported, and the server keeps serving
                self.loops.failed("reconcile", error, f"reading {self.source.description}")
                attempt.crashed = True
                attempt.errors = [
                    self.loops.redact(f"cannot read {self.source.description}: {_brief(error)}")
                ]
                return await self._settle(attempt)
            return await self._apply(loaded, key, attempt)

    def _already_applied(self, key: frozenset[tuple[str, str]], revision: Revision) -> bool:
        current = self.current
        return (
            key == self._applied_files
            and current is not None
            and current.sha == revision.sha
            and current.dirty == revision.dirty
        )

    async def _apply(
        self, loaded: Loaded, key: frozenset[tuple[str, str]], attempt: Attempt
    ) -> Attempt:
        """Apply a loaded revision (the reconcile lock is held)."""
        if loaded.desired is None:
            self.metrics.count("invalid_revisions_total")
            attempt.errors = [d.format() for d in loaded.diagnostics if d.severity == "error"]
            return await self._settle(attempt)
        resources = list(loaded.desired.resources.values())
        try:
            # Built before the state is written: a revision agents cannot be served is
            # refused whole, and the state keeps the last good one.
            configs = agent_configs(resources, self.environ)
            plan, result = await self.state.write(
                lambda c: self.session.apply_on(loaded, c, self.clock)
            )
        except Exception as error:  # noqa: BLE001 - reported; the last good revision serves
            self.metrics.count("apply_errors_total")
            label = attempt.revision.label if attempt.revision else "?"
            self.loops.failed("reconcile", error, f"applying revision {label}")
            attempt.crashed = True
            attempt.errors = [self.loops.redact(f"apply failed: {_brief(error)}")]
            return await self._settle(attempt)
        attempt.applied = True
        attempt.summary = plan.summary
        attempt.changed = result is not None and result.wrote
        self.current = loaded.revision
        self._applied_files = key
        self._publish(resources, configs)
        return await self._settle(attempt)

    def load_edit(self, files: list[SourceFile]) -> Loaded:
        """Load an edited set of config files with the served revision's parse cache.

        Only the edited files are parsed; the result is what `commit_and_apply` applies.
        """
        self.metrics.count("config_loads_total")
        return self.session.load_files(files, Revision(None, None, None, None))

    async def commit_and_apply(
        self,
        paths: list[Path],
        message: str,
        author: str,
        email: str,
        loaded: Loaded,
        files: list[SourceFile],
    ) -> tuple[str, Attempt]:
        """Commit files written to the working tree, then apply the edit already loaded.

        One edit is one parse (`load_edit`), one commit and one apply: the watcher that sees
        the commit afterwards finds the files and commit applied and does nothing.

        Args:
            paths: the files written or deleted, in the working tree.
            message: the commit message.
            author: the author and committer name.
            email: the author and committer email.
            loaded: `load_edit` of the edited files.
            files: the edited files (what `loaded` was loaded from).

        Returns:
            The new commit's SHA and the apply attempt.

        Raises:
            GitSourceError: the source is read-only, or the commit failed (nothing committed).
        """
        location = self.source.writable
        if location is None:
            raise GitSourceError(f"{self.source.description} is read-only")
        async with self._reconcile_lock:
            try:
                # Shielded: once started, the commit finishes even if the request is cancelled.
                sha = await asyncio.shield(
                    asyncio.to_thread(commit_files, location, paths, message, author, email)
                )
                revision = await asyncio.to_thread(worktree_revision, location)
            except Exception as error:
                raise GitSourceError(
                    f"cannot commit to {self.source.description}: {error}"
                ) from error
            attempt = Attempt(f"operator API commit {sha[:12]}", self.clock(), revision)
            loaded = dataclasses.replace(loaded, revision=revision)
            key = frozenset((f.path, f.blob) for f in files)
            return sha, await self._apply(loaded, key, attempt)

    async def _settle(self, attempt: Attempt) -> Attempt:
        """Finish an attempt, and store a refused revision (the status site's banner) until
        a revision is applied."""
        self._finish(attempt)
        if not attempt.crashed:
            self.loops.succeeded("reconcile")
        revision, served = attempt.revision, self.current
        try:
            if attempt.errors and revision is not None:
                refusal = Refusal(
                    revision.sha,
                    revision.label,
                    attempt.at,
                    tuple(attempt.errors),
                    served.sha if served else None,
                    served.label if served else None,
                )
                await self.state.write(lambda c: record_refusal(c, refusal))
                self._refusal_stored = True
            elif attempt.applied and self._refusal_stored:
                await self.state.write(clear_refusal)
                self._refusal_stored = False
        except Exception:  # the banner is not worth a failed reconcile
            log.exception("could not store the refusal of revision %s for the site", revision)
        return attempt

    def _finish(self, attempt: Attempt) -> Attempt:
        self.last_attempt = attempt
        label = attempt.revision.label if attempt.revision else "?"
        if attempt.errors:
            self.metrics.count("reconciles_total", result="error")
            log.error(
                "revision %s (%s) not applied, %d error(s); still serving %s:\n  %s",
                label,
                attempt.trigger,
                len(attempt.errors),
                self.current.label if self.current else "nothing",
                "\n  ".join(attempt.errors[:20]),
            )
        elif not attempt.changed:
            self.metrics.count("reconciles_total", result="unchanged")
            log.debug("revision %s unchanged (%s)", label, attempt.trigger)
            self.ready.set()
        else:
            self.metrics.count("reconciles_total", result="applied")
            summary = attempt.summary
            log.info(
                "revision %s applied (%s): %d to add, %d to change, %d to destroy",
                label,
                attempt.trigger,
                summary.add if summary else 0,
                summary.change if summary else 0,
                summary.destroy if summary else 0,
            )
            self.ready.set()
        return attempt

    def _publish(self, resources: list[Resource], configs: dict[str, AgentConfig]) -> None:
        """Swap in new agent configs; readers see the old set or the new, never a mix."""
        self.resources = {r.address: r for r in resources}
        self.maintenance = MaintenanceIndex(resources)
        self.configs = configs
        self.access = agent_access(resources)
        self._wake_pulls()
        for listener in self.on_publish:
            try:
                listener()
            except Exception as error:  # noqa: BLE001 - one listener must not stop the others
                self.loops.failed("reconcile", error, "telling the controllers")
        for config in self.configs.values():
            for problem in config.problems:
                log.warning("agent %s: canary left out: %s", config.agent, problem)

    # -- agents ----------------------------------------------------------------------------

    def agent_activity(self) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Each agent's last pull and last push."""
        return {agent: (seen.last_pull, seen.last_results) for agent, seen in self.agents.items()}

    def restore_activity(
        self, stored: Mapping[str, tuple[datetime | None, datetime | None]]
    ) -> None:
        """Take back the last pull and push stored before a restart (newer ones win)."""
        for agent, (pull, push) in stored.items():
            seen = self.agents.setdefault(agent, AgentStatus())
            if pull is not None and (seen.last_pull is None or pull > seen.last_pull):
                seen.last_pull = pull
            if push is not None and (seen.last_results is None or push > seen.last_results):
                seen.last_results = push

    def enabled_agents(self) -> dict[str, str]:
        """The agents of the served revision that may pull, with their regions."""
        return {
            agent: config.region
            for agent, config in self.configs.items()
            if agent in self.access and self.access[agent] is None
        }

    def pulls_changed(self) -> asyncio.Event:
        """An event set the next time agent configs or tokens change (then replaced)."""
        return self._pulls_changed

    def release_pulls(self) -> None:
        """Answer every held pull now and hold no more (the server is stopping: uvicorn
        waits for requests in flight, and a held pull would hold the exit up to its wait)."""
        self.pulls_released = True
        self._wake_pulls()

    def _wake_pulls(self) -> None:
        woken, self._pulls_changed = self._pulls_changed, asyncio.Event()
        woken.set()

    def authenticate(self, authorization: str | None) -> str:
        """The agent a bearer token belongs to.

        Raises:
            RequestRefused: 401 for a missing or unknown token, 403 for a disabled agent/region.
        """
        token = _bearer(authorization)
        agent = agent_of(token) if token else None
        stored = self.tokens.get(agent) if agent else None
        if token is None or agent is None or stored is None or not token_matches(token, stored):
            raise RequestRefused(401, "unknown or missing agent token")
        if agent not in self.access:
            raise RequestRefused(401, f"agent {agent} is not in the configuration")
        reason = self.access[agent]
        if reason is not None:
            raise RequestRefused(403, reason)
        return agent

    def agent_config(self, agent: str) -> AgentConfig:
        """The config an authenticated agent pulls; records the pull."""
        config = self.configs[agent]
        status = self.agents.setdefault(agent, AgentStatus())
        status.last_pull = self.clock()
        status.config_served = config.etag
        return config

    async def ingest(
        self, agent: str, rows: list[Any] | pa.Table, sent_at: datetime | None
    ) -> dict[str, Any]:
        """Validate a batch row by row and store the rest; says what landed and what did not.

        `rows` are decoded JSON, or already read into columns (`result_columns.decode_batch`).
        """
        config = self.configs.get(agent)
        if config is None:  # e.g. no canary selects `local` any more
            self.metrics.count("ingest_rows_dropped_total", len(rows), reason="unassigned_canary")
            dropped = {"unassigned_canary": len(rows)} if len(rows) else {}
            return {"accepted": 0, "duplicates": 0, "dropped": dropped}
        verdict = validate_rows(rows, config, self.clock(), sent_at, self.policy)
        marked = self.maintenance.mark(verdict.accepted)
        if marked:
            self.metrics.count("ingest_rows_maintenance_total", marked)
        inserted = await self.ingest_queue.submit(agent, config.region, verdict.accepted)
        if inserted:
            self.results_version += 1
        duplicates = len(verdict.accepted) - inserted
        self.metrics.count("ingest_rows_total", inserted, outcome="accepted")
        self.metrics.count("ingest_rows_total", duplicates, outcome="duplicate")
        for reason, count in verdict.dropped.items():
            self.metrics.count("ingest_rows_dropped_total", count, reason=reason)
        status = self.agents.setdefault(agent, AgentStatus())
        status.last_results = self.clock()
        return {"accepted": inserted, "duplicates": duplicates, "dropped": dict(verdict.dropped)}

    async def mint_token(self, agent: str) -> str:
        """Mint (or rotate) an agent's token; the old one stops working at once."""
        token = await self.state.write(lambda c: mint_token(c, agent, self.clock()))
        self.tokens = await self.state.read(token_hashes)
        self._wake_pulls()  # a waiting pull with the old token is refused now
        return token

    async def revoke_token(self, agent: str) -> bool:
        """Revoke an agent's token (it was deleted or renamed); returns whether it had one."""
        revoked = await self.state.write(lambda c: revoke_token(c, agent))
        self.tokens = await self.state.read(token_hashes)
        self._wake_pulls()
        return revoked

    # -- queries ---------------------------------------------------------------------------

    def resources_of(self, kind: str) -> list[Resource]:
        """The served revision's resources of one kind, by name."""
        return sorted((r for r in self.resources.values() if r.kind == kind), key=lambda r: r.name)

    async def results_last_hour(self) -> dict[str, int]:
        """Rows stored per agent over the last hour."""
        since = self.clock() - timedelta(hours=1)
        return await self.state.read(lambda c: results_per_agent(c, since))

    async def region_results_last_hour(self) -> dict[str, int]:
        """Rows stored per region over the last hour."""
        since = self.clock() - timedelta(hours=1)
        return await self.state.read(lambda c: results_per_region(c, since))

    async def probe_series(self) -> str:
        """The per-check series (`core/probe_metrics`), read at most every few seconds: a
        scrape every second costs one query every `PROBE_CACHE_SECONDS`."""
        level = cast(ProbeLevel, self.settings.probe_metrics)
        if level == "off":
            return ""
        now = time.monotonic()
        if self._probe_cache is None or now - self._probe_cache[0] >= PROBE_CACHE_SECONDS:
            since = self.clock() - timedelta(seconds=self.settings.probe_metrics_window)
            # Rendered on the reader thread too: 75,000 checks take 0.3 s to write out.
            try:
                text = await self.state.read(lambda c: render_probes(latest_runs(c, since), level))
            except Exception:  # noqa: BLE001 - /metrics must answer with the server's own series
                log.exception("per-check series could not be read; /metrics goes without them")
                self.metrics.count("probe_metrics_errors_total")
                return ""
            self._probe_cache = (now, text)
        return self._probe_cache[1]

    def render_metrics(self) -> str:
        """Prometheus text: counters plus gauges computed now."""
        gauges: list[Gauge] = []
        if self.current is not None:
            gauges.append(
                (
                    "revision_info",
                    "The revision being served.",
                    (("sha", self.current.sha or ""),),
                    1,
                )
            )
        gauges.append(
            ("ready", "1 once the first revision is applied.", (), float(self.ready.is_set()))
        )
        by_status: dict[str, int] = {}
        for agent, reason in self.access.items():
            seen = self.agents.get(agent)
            key = "disabled" if reason else ("active" if seen and seen.last_pull else "never_seen")
            by_status[key] = by_status.get(key, 0) + 1
        for key, count in sorted(by_status.items()):
            gauges.append(("agents", "Agents by status.", (("status", key),), count))
        gauges.append(
            (
                "last_attempt_failed",
                "1 when the last reconcile failed.",
                (),
                float(bool(self.last_attempt and self.last_attempt.errors)),
            )
        )
        for source in self.gauges:
            gauges.extend(source())
        return self.metrics.render(gauges)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The revision served, the last attempt and its errors."""
        attempt = self.last_attempt
        return {
            "source": self.source.description,
            "current_revision": _revision(self.current),
            "last_attempt": None
            if attempt is None
            else {
                "trigger": attempt.trigger,
                "at": attempt.at.isoformat(),
                "revision": _revision(attempt.revision),
                "applied": attempt.applied,
                "errors": attempt.errors,
            },
            "ready": self.ready.is_set(),
        }


def _brief(error: BaseException) -> str:
    """An exception as one line: its type and message."""
    return f"{type(error).__name__}: {error}"


def _revision(revision: Revision | None) -> dict[str, Any] | None:
    if revision is None:
        return None
    return {
        "sha": revision.sha,
        "label": revision.label,
        "author": revision.author,
        "message": revision.message,
        "dirty": revision.dirty,
    }


def _bearer(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip() or None
