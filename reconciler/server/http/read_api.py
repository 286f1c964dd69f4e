"""The read API: targets with blended status, results, uptime, latency, regions, revisions.

Target ids are canary keys with '/' replaced by '.' (`monitoring/api-health` is
`monitoring.api-health`); namespaces and names are slugs, so the '.' is unambiguous.

Status of a target (GET /api/v1/targets, and per region in GET /api/v1/targets/{id}/regions):
`core/status.py` decides it, as for the site: operational, degraded_performance,
partial_outage, major_outage, under_maintenance, unknown or paused, from the incident
engine's thresholds and policy, with the last run beside it (docs/status.md).

Windows: `since` and `until` take RFC 3339 times with an offset, or a duration before now
(`24h`, `7d`, `90m`); the default is the 24h ending now, start inclusive, end exclusive.
Latency buckets (`step`) default from the window's length: up to 24h → 5m, up to 7d → 1h,
up to 30d → 6h, longer → whole days (about 120 points). Latency counts every run, whatever
its status. Every route answers 401 without the read token when RECONCILER_READ_TOKEN is set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from reconciler.core.refusal import RequestRefused
from reconciler.core.resources import Resource, address_of
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.common import (
    control_of,
    documented_query,
    json_response,
    query_limit,
    require_read,
)
from reconciler.server.http.docs import errors, query
from schemas.durations import format_duration, parse_duration

router = APIRouter(prefix="/api/v1", tags=["read"])

DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_RESULTS_LIMIT = 100
MAX_RESULTS_LIMIT = 1000
DEFAULT_REVISIONS_LIMIT = 20
MAX_REVISIONS_LIMIT = 1000
MAX_POINTS = 10_000
_DEFAULT_STEPS = (
    (timedelta(hours=24), 5 * 60),
    (timedelta(days=7), 3600),
    (timedelta(days=30), 6 * 3600),
)
_DAYS = re.compile(r"([0-9]+)d(.*)")
_SPAN_EXAMPLES = "e.g. '90m', '24h', '7d' or '1d12h'"
# The times a window may start or end at: results are never older than the epoch, and a
# window (and its default 24h start) must stay inside what datetime can represent.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


_TIME = {"type": "string", "examples": ["2024-05-01T12:00:00Z", "24h"]}
_WINDOW = (
    ("since", _TIME, "Start: an RFC 3339 time with an offset or a duration before now (24h)."),
    ("until", _TIME, "End: an RFC 3339 time with an offset or a duration before now (now)."),
    ("region", {"type": "string"}, "Only this region."),
)
_STEP = ("step", {"type": "string", "examples": ["5m"]}, "Bucket width (default by window).")
_WINDOW_ERRORS = errors(400, 401, 404, 422)


def _limit_doc(default: int, most: int) -> tuple[str, dict[str, Any], str]:
    schema = {"type": "integer", "minimum": 1, "maximum": most}
    return ("limit", schema, f"At most this many ({default}).")


@dataclass(frozen=True)
class Window:
    """The time range and region a report covers."""

    since: datetime
    until: datetime
    region: str | None

    def describe(self) -> dict[str, Any]:
        """The window as echoed in responses."""
        return {
            "since": _rfc3339(self.since),
            "until": _rfc3339(self.until),
            "region": self.region,
        }


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_span(text: str) -> timedelta:
    """Parse a duration such as `5m`, `24h`, `7d` or `1d12h` (Go-style units plus days).

    Args:
        text: whole days (`<n>d`), optionally followed by a Go-style duration.

    Returns:
        The duration.

    Raises:
        ValueError: the text is not a duration.
    """
    stripped = text.strip()
    days = _DAYS.fullmatch(stripped)
    seconds = 0.0
    if days is not None:
        seconds = int(days.group(1)) * 86_400
        stripped = days.group(2)
        if not stripped:
            return timedelta(seconds=seconds)
    return timedelta(seconds=seconds + parse_duration(stripped))


def _in_range(name: str, text: str, moment: datetime) -> datetime:
    """`moment`, refused (422, naming the parameter) outside the times the API can report on."""
    if not EARLIEST <= moment <= LATEST:
        raise RequestRefused(
            422,
            f"{name}: {text!r} is out of range; expected a time from "
            f"{_rfc3339(EARLIEST)} to {_rfc3339(LATEST)}",
        )
    return moment


def _instant(name: str, text: str, now: datetime) -> datetime:
    try:
        return _in_range(name, text, now - parse_span(text))
    except (ValueError, OverflowError):
        pass
    expected = (
        f"{name}: expected an RFC 3339 time with an offset (e.g. 2024-05-01T12:00:00Z) or a "
        f"duration before now ({_SPAN_EXAMPLES}), got {text!r}"
    )
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RequestRefused(400, expected) from None
    if moment.tzinfo is None:
        raise RequestRefused(400, expected)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC instant
        moment = datetime.min.replace(tzinfo=UTC)
    return _in_range(name, text, moment)


def _known_regions(control: ControlPlane) -> set[str]:
    """Every region results can come from: the declared ones and the control plane's own."""
    return {r.name for r in control.resources_of("Region")} | {control.settings.local_region}


def _window(request: Request, control: ControlPlane) -> Window:
    params = request.query_params
    now = control.clock()
    until = _instant("until", params["until"], now) if params.get("until") else now
    since = _instant("since", params["since"], now) if params.get("since") else None
    since = since if since is not None else until - DEFAULT_WINDOW
    if since >= until:
        raise RequestRefused(
            400, f"since ({_rfc3339(since)}) must be before until ({_rfc3339(until)})"
        )
    region = params.get("region") or None
    if region is not None:
        known = _known_regions(control)
        if region not in known:
            raise RequestRefused(
                400, f"region: expected one of {', '.join(sorted(known))}, got {region!r}"
            )
    return Window(since, until, region)


def _step(request: Request, window: Window) -> int:
    """Bucket width in whole seconds: `step=` or a default for the window's length."""
    length = window.until - window.since
    text = request.query_params.get("step")
    if not text:
        for longest, seconds in _DEFAULT_STEPS:
            if length <= longest:
                return seconds
        return max(1, math.ceil(length.total_seconds() / 120 / 86_400)) * 86_400
    expected = f"step: expected a duration of at least 1s in whole seconds ({_SPAN_EXAMPLES})"
    try:
        span = parse_span(text).total_seconds()
    except (ValueError, OverflowError):
        raise RequestRefused(400, f"{expected}, got {text!r}") from None
    if span < 1 or span != int(span):
        raise RequestRefused(400, f"{expected}, got {text!r}")
    points = length.total_seconds() / span
    if points > MAX_POINTS:
        raise RequestRefused(
            400,
            f"step: {text} splits the window into {math.ceil(points)} buckets; "
            f"expected at most {MAX_POINTS}, use a larger step",
        )
    return int(span)


def target_id(key: str) -> str:
    """The URL-safe id of a canary key: `namespace/name` → `namespace.name`.

    Args:
        key: the canary key.

    Returns:
        The id the read API's target routes take.
    """
    return key.replace("/", ".")


def _target(control: ControlPlane, identifier: str) -> Resource:
    resource = control.resources.get(address_of("Canary", identifier.replace(".", "/", 1)))
    if resource is None:
        raise RequestRefused(
            404,
            f"no target {identifier!r} in the served revision; ids look like "
            "'namespace.name' (see GET /api/v1/targets)",
        )
    return resource


def _derived(control: ControlPlane) -> dict[str, list[Resource]]:
    """The served revision's derived canaries by parent canary key."""
    by_parent: dict[str, list[Resource]] = {}
    for resource in control.resources.values():
        if resource.kind == "DerivedCanary":
            by_parent.setdefault(resource.parent or "", []).append(resource)
    return by_parent


def _regions_of(control: ControlPlane, key: str, window: Window) -> dict[str, list[str]]:
    """The regions a canary runs in (within the window's region filter) and their agents."""
    agents: dict[str, list[str]] = {}
    for derived in control.resources.values():
        if derived.kind != "DerivedCanary" or derived.parent != key:
            continue
        region = derived.spec["region"]
        if window.region is None or region == window.region:
            agents.setdefault(region, []).append(derived.agent or "")
    return agents


async def _respond(
    request: Request, build: Callable[[ControlPlane], Awaitable[dict[str, Any]]]
) -> Response:
    """Check the read token and the query's names, then build the document."""
    require_read(request)
    documented_query(request)
    return json_response(await build(control_of(request)))


@router.get(
    "/targets",
    summary="Every canary with its regions, agents and blended status",
    responses=errors(401),
)
async def list_targets(request: Request) -> Response:
    """Every canary of the served revision: id, name, namespace, regions, agents, status.

    `status` (with `reason`, `last_run`, `regions_down` and `region_status`) is
    `core.status.document`: one definition for the site and this API.
    """

    async def build(control: ControlPlane) -> dict[str, Any]:
        derived = _derived(control)
        statuses = await control.reports.statuses(control.resources.values(), control.clock())
        targets = []
        for canary in control.resources_of("Canary"):
            namespace, _, name = canary.name.partition("/")
            mine = derived.get(canary.name, [])
            status = statuses[canary.name]
            targets.append(
                {
                    "id": target_id(canary.name),
                    "name": name,
                    "namespace": namespace,
                    "status": status["status"],
                    "regions": sorted({d.spec["region"] for d in mine}),
                    "agents": sorted({d.agent for d in mine if d.agent}),
                    **{k: v for k, v in status.items() if k != "status"},
                }
            )
        return {"targets": targets}

    return await _respond(request, build)


@router.get(
    "/targets/{id}/results",
    summary="A target's runs in a window, newest first",
    responses=_WINDOW_ERRORS,
    openapi_extra=query(*_WINDOW, _limit_doc(DEFAULT_RESULTS_LIMIT, MAX_RESULTS_LIMIT)),
)
async def target_results(request: Request, id: str) -> Response:
    """A target's runs, newest first: `region=`, `since=`, `until=`, `limit=` (100)."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        key = _target(control, id).name
        window = _window(request, control)
        limit = query_limit(request, DEFAULT_RESULTS_LIMIT, MAX_RESULTS_LIMIT)
        rows = await control.reports.recent_results(
            key, window.since, window.until, window.region, limit
        )
        return {"target": id, **window.describe(), "limit": limit, "results": rows}

    return await _respond(request, build)


@router.get(
    "/targets/{id}/uptime",
    summary="Runs, passes and uptime ratio, overall and by check",
    responses=_WINDOW_ERRORS,
    openapi_extra=query(*_WINDOW),
)
async def target_uptime(request: Request, id: str) -> Response:
    """Runs, passed runs and uptime (None without runs) of a target, overall and by check."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        key = _target(control, id).name
        window = _window(request, control)
        report = await control.reports.uptime(key, window.since, window.until, window.region)
        return {"target": id, **window.describe(), **report}

    return await _respond(request, build)


def _step_fields(step: int) -> dict[str, Any]:
    return {"step": format_duration(step), "step_seconds": step}


@router.get(
    "/targets/{id}/latency",
    summary="p50/p95/p99 over the window and per time bucket",
    responses=_WINDOW_ERRORS,
    openapi_extra=query(*_WINDOW, _STEP),
)
async def target_latency(request: Request, id: str) -> Response:
    """p50/p95/p99 over the window and a series bucketed by `step=` (default by window)."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        key = _target(control, id).name
        window = _window(request, control)
        step = _step(request, window)
        report = await control.reports.latency(key, window.since, window.until, window.region, step)
        return {"target": id, **window.describe(), **_step_fields(step), **report}

    return await _respond(request, build)


@router.get(
    "/targets/{id}/latency/by-region",
    summary="One latency series per region",
    responses=_WINDOW_ERRORS,
    openapi_extra=query(*_WINDOW, _STEP),
)
async def target_latency_by_region(request: Request, id: str) -> Response:
    """Per region of a target: p50/p95/p99 over the window and a bucketed series.

    Regions the target runs in appear even without runs; regions with runs in the window
    appear even when the target no longer runs there.
    """

    async def build(control: ControlPlane) -> dict[str, Any]:
        canary = _target(control, id)
        window = _window(request, control)
        step = _step(request, window)
        by_region = await control.reports.latency_by_region(
            canary.name, window.since, window.until, window.region, step
        )
        configured = _regions_of(control, canary.name, window).keys()
        empty: dict[str, Any] = {"count": 0, "p50": None, "p95": None, "p99": None, "series": []}
        regions = [
            {"region": region, **by_region.get(region, empty)}
            for region in sorted(configured | by_region.keys())
        ]
        return {"target": id, **window.describe(), **_step_fields(step), "regions": regions}

    return await _respond(request, build)


@router.get("/regions", summary="The enabled regions of the served revision", responses=errors(401))
async def list_regions(request: Request) -> Response:
    """The served revision's enabled regions: name, displayName, location."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        regions = [
            {
                "name": region.name,
                "displayName": region.spec.get("displayName"),
                "location": region.spec.get("location"),
            }
            for region in control.resources_of("Region")
            if region.spec.get("enabled", True)
        ]
        return {"regions": regions}

    return await _respond(request, build)


@router.get(
    "/targets/{id}/regions",
    summary="A target's regions with uptime, p50, p95, status",
    responses=_WINDOW_ERRORS,
    openapi_extra=query(*_WINDOW),
)
async def target_regions(request: Request, id: str) -> Response:
    """The regions a target runs in, each with its agents, uptime, p50, p95 and status."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        canary = _target(control, id)
        window = _window(request, control)
        summaries = await control.reports.region_summaries(
            canary.name, window.since, window.until, window.region
        )
        agents = _regions_of(control, canary.name, window)
        key = canary.name
        current = await control.reports.statuses(control.resources.values(), control.clock(), key)
        states = current[key]["region_status"]
        empty: dict[str, Any] = {
            "total": 0,
            "passed": 0,
            "degraded": 0,
            "retried": 0,
            "uptime": None,
            "p50": None,
            "p95": None,
            "last_status": None,
            "last_run_at": None,
        }
        regions = [
            {
                "region": region,
                "agents": sorted(names),
                **summaries.get(region, empty),
                "status": states.get(region, {}).get("status", "unknown"),
            }
            for region, names in sorted(agents.items())
        ]
        return {"target": id, **window.describe(), "regions": regions}

    return await _respond(request, build)


@router.get(
    "/revisions",
    summary="Applied revisions, newest first",
    responses=errors(400, 401),
    openapi_extra=query(_limit_doc(DEFAULT_REVISIONS_LIMIT, MAX_REVISIONS_LIMIT)),
)
async def list_revisions(request: Request) -> Response:
    """Applied revisions, newest first, at most `limit=` (20)."""

    async def build(control: ControlPlane) -> dict[str, Any]:
        limit = query_limit(request, DEFAULT_REVISIONS_LIMIT, MAX_REVISIONS_LIMIT)
        rows = await control.reports.revisions(limit)
        return {"revisions": rows}

    return await _respond(request, build)
