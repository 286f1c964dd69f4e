"""Canary deployment runs in the state file: their runtime state, evaluations, actions, and
per-group metrics pushed by gateways."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from reconciler.store.db import Connection


@dataclass(frozen=True)
class StoredRun:
    """A run as stored: its identity, the state column, and the runtime document."""

    run_id: str
    route: str
    run_fingerprint: str
    state: str
    reason: str
    created_serial: int
    runtime: dict[str, Any] | None


def latest_runs(connection: Connection) -> dict[str, StoredRun]:
    """The newest run of every route (superseded runs are history)."""
    rows = connection.execute(
        """SELECT id, route, run_fingerprint, state, reason, created_serial, runtime
           FROM canary_runs
           QUALIFY row_number() OVER (PARTITION BY route ORDER BY created_serial DESC) = 1"""
    ).fetchall()
    return {
        row[1]: StoredRun(
            run_id=row[0],
            route=row[1],
            run_fingerprint=row[2],
            state=row[3],
            reason=row[4],
            created_serial=row[5],
            runtime=orjson.loads(row[6]) if row[6] else None,
        )
        for row in rows
    }


def open_runs(connection: Connection) -> dict[str, str]:
    """Each route's run a new run would abandon (pending, progressing or paused), as a plan
    names it: `checkout#18, progressing at step 2 of 4`."""
    found = {}
    for route, run in latest_runs(connection).items():
        if run.state not in ("pending", "progressing", "paused"):
            continue
        step = (run.runtime or {}).get("step", -1)
        steps = len(run_steps(connection, [run.run_id]).get(run.run_id, []))
        where = "" if step < 0 else f" at step {step + 1} of {steps}"
        found[route] = f"{run.run_id}, {run.state}{where}"
    return found


def save_run(
    connection: Connection, run_id: str, state: str, runtime: dict[str, Any], now: datetime
) -> None:
    """Store a run's runtime state."""
    connection.execute(
        "UPDATE canary_runs SET state = ?, runtime = ?::JSON, updated_at = ? WHERE id = ?",
        [state, orjson.dumps(runtime).decode(), now, run_id],
    )


def add_evaluation(
    connection: Connection, run_id: str, route: str, at: datetime, step: int,
    verdict: str, reason: str, detail: dict[str, Any],
) -> None:  # fmt: skip
    """Record one evaluation with its values and thresholds."""
    connection.execute(
        "INSERT INTO canary_evaluations VALUES (?, ?, ?, ?, ?, ?, ?::JSON)",
        [run_id, route, at, step, verdict, reason, orjson.dumps(detail).decode()],
    )


def evaluations(connection: Connection, run_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A run's most recent evaluations, newest first."""
    rows = connection.execute(
        """SELECT strftime(evaluated_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), step,
                  verdict, reason, detail
           FROM canary_evaluations WHERE run_id = ? ORDER BY evaluated_at DESC LIMIT ?""",
        [run_id, limit],
    ).fetchall()
    return [
        {"at": r[0], "step": r[1], "verdict": r[2], "reason": r[3], **orjson.loads(r[4])}
        for r in rows
    ]


@dataclass(frozen=True)
class RunView:
    """A route's latest canary run as people see it, the same in the CLI, the site and the API.

    `reason` is the run's latest reason (the controller's, kept in its runtime document), else
    the reason the apply stored when it started or superseded the run.
    """

    route: str
    run: str
    state: str
    reason: str
    step: int
    weights: dict[str, int]
    consecutive_failures: int
    evaluations: list[dict[str, Any]]

    def document(self) -> dict[str, Any]:
        """The JSON form (what `GET /canary` and `reconcile canary status` show)."""
        return {
            "route": self.route,
            "run": self.run,
            "state": self.state,
            "reason": self.reason,
            "step": self.step,
            "weights": self.weights,
            "consecutive_failures": self.consecutive_failures,
            "evaluations": self.evaluations,
        }


def run_view(
    run: StoredRun, recent: list[dict[str, Any]], configured: dict[str, int] | None = None
) -> RunView:
    """The view of a stored run, with its most recent evaluations (`configured`: the route's
    own weights, which a run that has not started yet leaves in place)."""
    runtime = run.runtime or {}
    return RunView(
        route=run.route,
        run=run.run_id,
        state=run.state,
        reason=runtime.get("reason") or run.reason,
        step=runtime.get("step", -1),
        weights=runtime.get("weights") or configured or {},
        consecutive_failures=runtime.get("consecutive_failures", 0),
        evaluations=recent,
    )


def run_views(connection: Connection, evaluations_shown: int) -> list[RunView]:
    """Every route's latest run, by route name, read from the state alone (a server's
    controller has its own): only of routes the applied revision still has with the canary
    the run was started for. A run left behind by a deleted route or a removed or disabled
    canary block is no longer driven, and is not listed (it stays in the state file)."""
    routes = {
        name: (run_fingerprint, orjson.loads(split) if split else [])
        for name, run_fingerprint, split in connection.execute(
            """SELECT name, run_fingerprint, spec->'traffic_split' FROM resources
               WHERE kind = 'Route'"""
        ).fetchall()
    }
    views = []
    for route, run in sorted(latest_runs(connection).items()):
        current = routes.get(route)
        if current is None or current[0] != run.run_fingerprint:
            continue
        configured = {group["name"]: group["weight"] for group in current[1]}
        views.append(
            run_view(run, evaluations(connection, run.run_id, evaluations_shown), configured)
        )
    return views


def run_steps(connection: Connection, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The steps (weight, pause, group weights) of canary runs, by run id."""
    rows = connection.execute(
        "SELECT id, steps FROM canary_runs WHERE id IN (SELECT unnest($ids::VARCHAR[]))",
        {"ids": run_ids},
    ).fetchall()
    return {run_id: orjson.loads(steps) for run_id, steps in rows}


def run_documents(connection: Connection, evaluations_shown: int) -> list[dict[str, Any]]:
    """Each route's latest canary run as `GET /canary` shows it from a running server: state,
    step, weights, latest evaluations, and the steps of its schedule."""
    views = [view.document() for view in run_views(connection, evaluations_shown)]
    steps = run_steps(connection, [view["run"] for view in views])
    return [{**view, "steps": steps.get(view["run"], [])} for view in views]


def record_action(
    connection: Connection, run_id: str, route: str, action: str, at: datetime, outcome: str
) -> None:
    """Audit a manual action (accepted or refused)."""
    connection.execute(
        "INSERT INTO canary_actions VALUES (?, ?, ?, ?, ?)", [run_id, route, action, at, outcome]
    )


def push_metrics(
    connection: Connection, route: str, groups: dict[str, tuple[int, int, float | None]],
    at: datetime,
) -> None:  # fmt: skip
    """Store per-group counts a gateway pushed."""
    for group, (requests, errors, p99) in groups.items():
        connection.execute(
            "INSERT INTO route_metrics VALUES (?, ?, ?, ?, ?, ?)",
            [route, group, at, requests, errors, p99],
        )


def pushed_metrics(
    connection: Connection, route: str, since: datetime
) -> dict[str, tuple[int, int, float | None]]:
    """Per-group requests, errors and the worst pushed p99 since a time."""
    rows = connection.execute(
        """SELECT grp, sum(requests), sum(errors), max(p99_ms) FROM route_metrics
           WHERE route = ? AND received_at >= ? GROUP BY grp""",
        [route, since],
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2]), r[3]) for r in rows}


def synthetic_metrics(
    connection: Connection, prefixes: dict[str, list[str]], since: datetime
) -> dict[str, tuple[int, int, float | None]]:
    """Per-group samples from synthetic HTTP checks whose URL points at a group's backends.

    A check counts for a group when its URL is one of the group's backend URLs or lies under
    it (the backend URL followed by `/` or `?`), so `http://h:80` does not claim a check on
    `http://h:8080/`. The match is per check: a canary whose checks probe two groups counts
    each check's results for its own group only.

    Args:
        connection: the state.
        prefixes: group name to backend URLs.
        since: only runs started since.

    Returns:
        Group name to (runs, runs that did not pass, p99 of their durations in ms), for the
        groups that have runs.
    """
    pairs = [(group, url) for group, urls in prefixes.items() for url in urls]
    if not pairs:
        return {}
    rows = connection.execute(
        """WITH backends AS (
               SELECT unnest(?::VARCHAR[]) AS grp, rtrim(unnest(?::VARCHAR[]), '/') AS base),
           checks AS (
               SELECT substr(d.address, length('derived_canary.') + 1) AS canary,
                      c.http.name AS name, c.http.url AS url
               FROM resources d,
                    unnest(from_json(d.spec->'$.http', '[{"name": "VARCHAR", "url": "VARCHAR"}]'))
                        AS c(http)
               WHERE starts_with(d.address, 'derived_canary.')),
           matched AS (
               SELECT DISTINCT b.grp, c.canary, c.name FROM checks c JOIN backends b
               ON rtrim(c.url, '/') = b.base OR starts_with(c.url, b.base || '/')
                  OR starts_with(c.url, b.base || '?'))
           SELECT m.grp, count(*), count(*) FILTER (WHERE r.status NOT IN ('pass', 'degraded')),
                  quantile_cont(r.duration_ms, 0.99)
           FROM results r JOIN matched m ON m.canary = r.canary AND m.name = r.check_name
           WHERE r.started_at >= ? AND r.check_type = 'http'
           GROUP BY m.grp""",
        [[group for group, _ in pairs], [url for _, url in pairs], since],
    ).fetchall()
    return {row[0]: (int(row[1]), int(row[2]), row[3]) for row in rows}
