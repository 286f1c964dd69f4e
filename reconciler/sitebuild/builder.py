"""Building the status site: refresh the rollups, read a snapshot, render what changed.

`build_site` does one build on a connection (what `reconcile site build` calls). A
`SiteBuilder` keeps its manifest between builds, and splits a build in three so that a
server can run each part where it belongs:

    builder = SiteBuilder(out_dir)
    await state.write(lambda c: builder.refresh(c, clock()))       # writes rollups; fast
    build = await state.read(lambda c: builder.collect(c, clock()))  # reads only
    await asyncio.to_thread(builder.publish, build)                  # renders and writes files
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from reconciler.core.collector import collect_kept, collector_paused
from reconciler.core.incidents import Probe, Target, targets_of
from reconciler.core.maintenance import windows_of
from reconciler.core.resources import Resource
from reconciler.core.status import document
from reconciler.sitebuild import figures, queries
from reconciler.sitebuild.canary_page import FAILURES_SHOWN, KeptSections
from reconciler.sitebuild.chart_heads import KeptHeads
from reconciler.sitebuild.kept import Kept, months_token, series_token
from reconciler.sitebuild.live import keep_histograms, refresh_live
from reconciler.sitebuild.model import (
    CanaryInfo,
    Page,
    RegionInfo,
    Snapshot,
    canaries_of,
    regions_of,
)
from reconciler.sitebuild.pages import Ahead, plan, plan_ahead, sla_pages
from reconciler.sitebuild.publish import SITE_DIR, Published, Publisher
from reconciler.sitebuild.queries import Figures, Tails, WindowState
from reconciler.sitebuild.rollups import backfill, update
from reconciler.sitebuild.side_by_side import side_by_side
from reconciler.sitebuild.silence import silent_of
from reconciler.sitebuild.sla import Month, months_of, months_pending, refresh_months
from reconciler.sitebuild.sla_pages import month_digest
from reconciler.sitebuild.tables import Tables, ensure_tables, read_meta
from reconciler.sitebuild.windows import WINDOWS
from reconciler.store import days
from reconciler.store.archive import DAY_SECONDS
from reconciler.store.db import Connection, state_ref, transaction
from reconciler.store.deployments import run_documents
from reconciler.store.incidents import list_incidents
from reconciler.store.refusals import latest_refusal
from reconciler.store.reports import revisions
from reconciler.store.resources import all_resources
from reconciler.store.screenshots import Screenshot, latest_screenshots
from reconciler.store.status import canary_statuses

FAILURE_HORIZON = timedelta(hours=24)
INCIDENTS_SHOWN = 200
# Half of DuckDB's `wal_autocheckpoint` default (16 MiB).
CHECKPOINT_FROM = 8 * 2**20
EVALUATIONS_SHOWN = 10
# Days of the per-day tier a server's build writes at most (a backfill spreads over builds).
TIER_DAYS_PER_BUILD = 5


@dataclass
class Build:
    """A snapshot and the pages to render from it."""

    snapshot: Snapshot
    pages: list[Page]
    render: list[Page]
    timings: dict[str, float] = field(default_factory=dict)
    # The windows' chart series tokens the snapshot's stored points were read under.
    series_tokens: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class _Opened:
    """What a build reads of the windows once their open parts are computed (`refresh_live`)."""

    meta: dict[str, str]
    windows: dict[str, WindowState]
    figures: dict[tuple[str, str, str | None], Figures]
    tails: dict[tuple[str, str], Tails]


@dataclass(frozen=True)
class Served:
    """The served revision's resources, and what every build derives from them."""

    resources: list[Resource]
    canaries: list[CanaryInfo]
    regions: list[RegionInfo]
    targets: tuple[dict[str, Target], dict[str, Probe]]

    @classmethod
    def of(cls, resources: list[Resource]) -> Served:
        canaries = canaries_of(resources)
        return cls(resources, canaries, regions_of(resources, canaries), targets_of(resources))


@dataclass(frozen=True)
class Months:
    """Every canary's stored SLA months, and each canary's digested (`month_digest`)."""

    by_canary: dict[str, list[Month]]
    digests: dict[str, str]

    @classmethod
    def read(cls, connection: Connection, tables: Tables) -> Months:
        found = months_of(connection, tables)
        return cls(found, {canary: month_digest(months) for canary, months in found.items()})


@dataclass(frozen=True)
class Report:
    """What a build did and how long each phase took."""

    published: Published
    windows: list[str]  # windows whose published figures changed
    staged: list[str]  # windows whose new figures were computed, to be published next build
    timings: dict[str, float]


def checkpoint_if_due(connection: Connection) -> None:
    """Checkpoint the state file when its log is half way to DuckDB's own checkpoint.

    DuckDB checkpoints by itself (0.2-0.3 s here) in whichever commit takes its log past
    `CHECKPOINT_FROM` × 2; done in a build with time to spare, it stays out of the builds
    that have the least. Skipped when it cannot run now (another transaction).
    """
    # fetchall, not fetchone: a result left unfinished blocks the connection's next statement
    rows = connection.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    if not rows or not rows[0][0]:
        return
    row = rows[0]
    try:
        size = os.stat(f"{row[0]}.wal").st_size
    except FileNotFoundError:
        return
    if size >= CHECKPOINT_FROM:
        with contextlib.suppress(duckdb.Error):
            connection.execute("CHECKPOINT").fetchall()


def _seconds(now: datetime) -> int:
    return int(now.timestamp())


class SiteBuilder:
    """Builds the site into one directory, build after build, touching only what changed.

    Args:
        out_dir: where the site goes.
        site_dir: the templates and static files (`site/` of the project).
        workers: processes rendering pages (forked, from a server too: `render_processes.py`).
        temporary: keep the rollups in the connection's `temp` catalog (for a read-only
            connection: every build then starts from scratch).
        stage_ahead: the caller calls `stage_ahead` and then `tidy` after each build (a
            server rebuilding every minute): builds leave the figures of a window that
            moved, the SLA months, the per-day tier's new days (once `stage_ahead` ran),
            and the freeing of their own objects, to them, so that neither the build of
            that minute nor the next pays for them.
        agent_silent_after: agents not heard from for longer are shown as silent (the
            server's `--agent-silent-after`); None shows none.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        site_dir: Path = SITE_DIR,
        workers: int = 1,
        temporary: bool = False,
        stage_ahead: bool = False,
        agent_silent_after: timedelta | None = None,
    ) -> None:
        self.silent_after = agent_silent_after
        self.tables = Tables("temp" if temporary else "main")
        self.staging = figures.Staging.DEFERRED if stage_ahead else figures.Staging.WITH_BUILD
        self.publisher = Publisher(out_dir, site_dir, workers, fill_spares=stage_ahead)
        self.windows: list[str] = []  # windows whose published figures changed
        self.staged: list[str] = []  # windows whose figures were staged (`moves.py`)
        self.timings: dict[str, float] = {}
        # The last build's snapshot and pages, a million small objects (0.05-0.1 s to free):
        # staging ahead, kept until `tidy`, not freed on the way out of the build.
        self.spent: Build | None = None
        # Stored rows that change only when a window moves, kept from build to build.
        self.kept = Kept()
        # What `stage_ahead` left for `draw_ahead` to draw (the SLA pages' snapshot).
        self.ahead: Snapshot | None = None
        # Each canary's recent failures and checks as HTML, made again when they change.
        self.sections = KeptSections()
        # Charts' stored parts, drawn between builds (`tidy`) while their window stays.
        self.heads = KeptHeads()
        # The chart series `stage_ahead` read, their heads drawn by `tidy`.
        self.staged_series: list[queries.Staged] = []
        # `stage_ahead` ran since the last build: it writes the per-day tier's new days, and
        # is relied on to do so after the next build too.
        self.staged_since_build = False

    def refresh(self, connection: Connection, now: datetime) -> list[str]:
        """Update rollups and window tables in one transaction (needs a writing connection).

        Returns:
            The windows whose published figures changed (see `moves.py` for staged ones).
        """
        started = time.perf_counter()
        ensure_tables(connection, self.tables)
        # The tier first: the rollups' daily histograms of finished days are summed from it.
        # Once its caller stages ahead after each build, the tier's new days (yesterday, in
        # a day's first build: 0.7 s at 1,000 canaries) are written there, between builds;
        # days late rows changed are written here, for the windows to be computed again
        # from them.
        between = self.staging is figures.Staging.DEFERRED and self.staged_since_build
        self.staged_since_build = False
        tier_late_from, tier_until = self._fill_tier(connection, now, new=not between)
        backfill(connection, self.tables, _seconds(now))
        with transaction(connection):
            refreshed = update(connection, self.tables, _seconds(now))
            middle = time.perf_counter()
            updated = figures.update_windows(
                connection,
                self.tables,
                _seconds(now),
                refreshed.late_from,
                self.staging,
                tier_late_from,
                tier_until,
            )
            self.windows, self.staged = updated.published, updated.staged
            # Staging ahead, the months are counted between builds (`stage_ahead`), the
            # first ones too, newest first and a month at a time: a month of raw rows takes
            # seconds at a large fleet (3.5 s for this month and the last at 50 M rows, a
            # quarter of the first build), and pages say what is not counted yet.
            if self.staging is not figures.Staging.DEFERRED:
                refresh_months(connection, self.tables, _seconds(now))
        # Not in the builds of a window's two minutes (staged, then published): in steady
        # state the others are the quiet ones, and a build catching up is slow anyway. A
        # builder staging ahead checkpoints there, between builds.
        quiet = not updated.staged and not updated.promoted
        if quiet and self.staging is figures.Staging.WITH_BUILD and not self.tables.temporary:
            checkpoint_if_due(connection)
        self.timings = {
            "rollups": middle - started,
            "windows": time.perf_counter() - middle,
        }
        return self.windows

    def _fill_tier(
        self, connection: Connection, now: datetime, *, new: bool = True, late: bool = True
    ) -> tuple[int | None, int | None]:
        """Bring the per-day tier up to date (`store/days.py`: its `new` days, those it
        lacks, and its `late` ones, which late rows changed); returns the earliest day (s)
        late rows changed in it, and its watermark (None: the tables are temporary, the
        state file is not written, and the long windows read raw rows for the days the
        tier lacks).

        A builder rebuilding every minute writes a few days a call, so that a state file
        that predates the tier is backfilled without holding the writer for minutes.
        """
        if self.tables.temporary:
            return None, None
        known = days.until(connection)
        most = None if self.staging is figures.Staging.WITH_BUILD else TIER_DAYS_PER_BUILD
        written = days.fill(connection, now, most=most, new=new, late=late)
        changed = [day for day in written if day < known]
        return (min(changed) * DAY_SECONDS if changed else None), days.until(connection)

    def stage_ahead(self, connection: Connection, now: datetime) -> list[str]:
        """Compute the figures of the windows that moved since the last build and keep them
        for the next build to publish, and bring the SLA months and the per-day tier's new
        days up to date (needs a writing connection; with `stage_ahead`, call after each
        build, before the next).

        Returns:
            The windows whose figures were staged.
        """
        ensure_tables(connection, self.tables)
        # The tier's new days (yesterday, once a day), before the tiered windows are staged
        # from it; its late days are the builds' (`refresh`).
        _, tier_until = self._fill_tier(connection, now, late=False)
        self.staged_since_build = True
        with transaction(connection):
            updated = figures.update_windows(
                connection,
                self.tables,
                _seconds(now),
                None,
                figures.Staging.AHEAD,
                tier_until=tier_until,
            )
            # The SLA months move once a day, and a day's first count reads a month of rows;
            # a state file's first months are counted here too, one a call, newest first.
            pending = months_pending(read_meta(connection, self.tables))
            moved = refresh_months(connection, self.tables, _seconds(now), most=1)
            # The last of them may have had nothing to count, but the pages said "pending".
            settled = pending and not months_pending(read_meta(connection, self.tables))
        if moved or settled:
            # Their pages, thousands at once, are drawn between builds too (`draw_ahead`).
            self.ahead = self._sla_snapshot(connection, now)
        if updated.staged:
            # A staged window's histogram moved and its next series are joined: read them
            # now, not in the build publishing them.
            keep_histograms(connection, self.tables, self.kept)
            self.staged_series = queries.keep_staged_series(
                connection, self.tables, self.kept, updated.staged
            )
        if not self.tables.temporary:
            checkpoint_if_due(connection)
        return updated.staged

    def _sla_snapshot(
        self, connection: Connection, now: datetime, meta: dict[str, str] | None = None
    ) -> Snapshot:
        """What the SLA pages read of the state (`pages.sla_pages`), and nothing else (a
        build's snapshot adds the rest to it; `meta`: `site_meta` if read already)."""
        served = self._served(connection)
        latest = revisions(connection, 1)
        meta = read_meta(connection, self.tables) if meta is None else meta
        months = self._months(connection, meta)
        return Snapshot(
            now=_seconds(now),
            canaries=served.canaries,
            regions=served.regions,
            statuses={},
            failures={},
            figures={},
            windows={},
            tails={},
            incidents=[],
            deployments=[],
            revision=latest[0] if latest else None,
            latest=queries.latest_result(connection, now),
            refusal=latest_refusal(connection),
            months=months.by_canary,
            month_digests=months.digests,
            month_incidents=queries.incidents_by_month(connection, now - timedelta(days=400)),
            months_pending=months_pending(meta),
            maintenance=windows_of(served.resources),
        )

    def draw_ahead(self) -> int:
        """Draw the pages that `stage_ahead` moved, the SLA pages of a new day (2,000 pages
        at 1,000 canaries), into a new version of the site, so that the next build does not
        (reads no state: call it after `stage_ahead`, holding no lock). Returns the pages
        drawn; a build that comes first draws them itself."""
        snapshot, self.ahead = self.ahead, None
        if snapshot is None or self.publisher.site.current() is None:
            return 0
        pages = sla_pages(snapshot)
        render = self.publisher.stale(pages)
        if not render:
            return 0
        with collector_paused():
            self.publisher.publish(pages, render, partial=True)
        return len(render)

    def tidy(self) -> None:
        """Draw the stored part of the charts whose window moved (`chart_heads.py`: 0.1 s a
        window at 1,000 canaries, all windows after the first build), then free the last
        build's snapshot and pages and collect the garbage it left (0.1-0.2 s): with
        `stage_ahead`, call it between builds, holding no lock (the next build frees them
        otherwise, and draws no chart part ahead)."""
        if self.spent is not None:
            with collector_paused():
                self.heads.draw(self.spent.snapshot, self.spent.series_tokens, self.staged_series)
        self.staged_series = []
        self._free()

    def _free(self) -> None:
        self.spent = None
        collect_kept()

    def collect(self, connection: Connection, now: datetime) -> Build:
        """Read what the pages show and decide which pages to render (reads only; the
        windows' open parts go to this connection's temporary tables)."""
        with collector_paused():
            return self._collect(connection, now)

    def _collect(self, connection: Connection, now: datetime) -> Build:
        started = time.perf_counter()
        served = self._served(connection)
        resources, canaries = served.resources, served.canaries
        marks: dict[str, float] = {}

        def open_parts() -> _Opened:
            # On `connection`: the open parts are its temporary tables.
            refresh_live(connection, self.tables, self.kept)
            marks["live"] = time.perf_counter() - started
            meta = read_meta(connection, self.tables)
            windows = queries.window_states(connection, self.tables, meta)
            return _Opened(
                meta,
                windows,
                queries.window_figures(connection, self.tables),
                queries.chart_tails(connection, self.tables, windows),
            )

        def the_rest(reader: Connection) -> tuple[Snapshot, Ahead]:
            begun = time.perf_counter()
            statuses = {
                key: document(state, times=False)
                for key, state in canary_statuses(reader, resources, now, served.targets).items()
            }
            marks["statuses"] = time.perf_counter() - begun
            rest = dataclasses.replace(
                self._sla_snapshot(reader, now),
                statuses=statuses,
                failures=queries.recent_failures(
                    reader,
                    self.tables,
                    now - FAILURE_HORIZON,
                    now + timedelta(days=1),
                    FAILURES_SHOWN,
                ),
                incidents=list_incidents(reader, None, None, INCIDENTS_SHOWN),
                deployments=run_documents(reader, EVALUATIONS_SHOWN),
                screenshots=_screenshots_by_canary(reader, resources),
                silent=silent_of(reader, resources, now, self.silent_after),
                outcome_counts=queries.outcome_counts(reader, now - timedelta(days=1), now),
            )
            # What of the pages reads no window, made while the open parts are (the
            # build completes `rest`, which these pages are bound to, with them).
            return rest, plan_ahead(rest, self.sections)

        if self.tables.temporary:
            # The site's tables are this connection's own, out of another cursor's sight.
            opened, (snapshot, ahead) = open_parts(), the_rest(connection)
        else:
            # The open parts are mostly DuckDB's work, the statuses mostly Python's: on two
            # cursors, side by side (0.05-0.1 s a build less at 1,000 canaries).
            with contextlib.closing(connection.cursor()) as reader:
                opened, (snapshot, ahead) = side_by_side(open_parts, lambda: the_rest(reader))
        snapshot.figures, snapshot.windows, snapshot.tails = (
            opened.figures,
            opened.windows,
            opened.tails,
        )
        read = time.perf_counter()
        pages = plan(snapshot, ahead=ahead)
        render = self.publisher.stale(pages)
        snapshot.stored = queries.stored_series(
            connection,
            self.tables,
            [page.chart for page in render if page.chart],
            len(canaries),
            self.kept,
        )
        tokens = {window.name: opened.meta.get(series_token(window.name)) for window in WINDOWS}
        snapshot.heads = self.heads.usable(tokens)
        done = time.perf_counter()
        return Build(
            snapshot,
            pages,
            render,
            {
                # Side by side: "reads" is the wall time of both, and holds the other two.
                "live": marks["live"],
                "statuses": marks["statuses"],
                "reads": read - started,
                "plan+charts": done - read,
            },
            tokens,
        )

    def _months(self, connection: Connection, meta: dict[str, str]) -> Months:
        """The SLA months and their digests, kept while their token stands (they move once a
        day, and reading and digesting them took 0.05 s a build at 1,000 canaries)."""
        return self.kept.get(
            "months", meta.get(months_token()), lambda: Months.read(connection, self.tables)
        )

    def _served(self, connection: Connection) -> Served:
        """The served revision's resources and what the site derives from them, kept while
        the state's serial stands (only an apply changes resources, and it moves the serial)."""
        ref = state_ref(connection)
        return self.kept.get(
            "resources", f"{ref.lineage}:{ref.serial}", lambda: Served.of(all_resources(connection))
        )

    def publish(self, build: Build) -> Report:
        """Render the chosen pages and write the site."""
        with collector_paused():
            published = self.publisher.publish(build.pages, build.render)
        timings = {**self.timings, **build.timings, **self.publisher.timings}
        return Report(published, self.windows, self.staged, timings)

    def build(self, connection: Connection, now: datetime | None = None) -> Report:
        """Refresh, collect and publish on one writing connection."""
        moment = now or datetime.now(UTC)
        self.ahead = None  # not drawn ahead: this build draws those pages
        if self.spent is not None:
            self._free()
        # One pause for the three: resumed between collect and publish, the collector's
        # first pass walked every object of the snapshot, still alive (0.03-0.07 s). Staging
        # ahead, the build also leaves its objects, kept and set aside, to `tidy` between
        # builds; otherwise they are freed on the way out and the first pass finds little.
        keep = self.staging is figures.Staging.DEFERRED
        with collector_paused(keep=keep):
            self.refresh(connection, moment)
            build = self.collect(connection, moment)
            if keep:
                self.spent = build
            return self.publish(build)


def build_site(
    connection: Connection,
    out_dir: Path,
    now: datetime | None = None,
    *,
    workers: int = 1,
    temporary: bool = False,
    site_dir: Path = SITE_DIR,
    agent_silent_after: timedelta | None = None,
) -> Report:
    """Build (or rebuild) the status site from a state file connection.

    Args:
        connection: the state; it must be writable unless `temporary`.
        out_dir: where the site goes (created by the first build).
        now: the build's clock (default: the current time).
        workers: processes rendering pages.
        temporary: keep rollups in `temp` (read-only connection: a full build every time).
        site_dir: the templates and static files.
        agent_silent_after: show agents not heard from for longer as silent (None: off).
    """
    builder = SiteBuilder(
        out_dir,
        site_dir=site_dir,
        workers=workers,
        temporary=temporary,
        agent_silent_after=agent_silent_after,
    )
    try:
        return builder.build(connection, now)
    finally:
        builder.publisher.settle()  # one build: leave no version being retired behind


def _screenshots_by_canary(
    connection: Connection, resources: list[Any]
) -> dict[str, list[Screenshot]]:
    """The newest screenshot of each browser check of each served canary, whichever agent
    took it (a derived canary or browser check no longer served shows none)."""
    served = {
        (r.name, str(check.get("name"))): r.parent
        for r in resources
        if r.kind == "DerivedCanary" and r.parent
        for check in r.spec.get("browser", [])
    }
    newest: dict[tuple[str, str], Screenshot] = {}
    for (canary, check), shot in latest_screenshots(connection).items():
        parent = served.get((canary, check))
        if parent is None:
            continue
        known = newest.get((parent, check))
        if known is None or shot.started_at > known.started_at:
            newest[(parent, check)] = shot
    by_canary: dict[str, list[Screenshot]] = {}
    for (parent, _check), shot in sorted(newest.items()):
        by_canary.setdefault(parent, []).append(shot)
    return by_canary
