"""The operator API: regions and agents with live status, and agent tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from reconciler.controlplane import ControlPlane
from reconciler.http.common import bearer_matches, control_of, json_response, problem

router = APIRouter(prefix="/operator", tags=["operator"])


def _guard(request: Request) -> Response | None:
    """404 when the operator API is off (no admin token set), 401 for a wrong token."""
    expected = control_of(request).settings.admin_token
    if not expected:
        return problem(404, "not found")
    if not bearer_matches(request.headers.get("authorization"), expected):
        return problem(401, "missing or invalid admin token")
    return None


def _agent_rows(control: ControlPlane, recent: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for resource in control.resources_of("Agent"):
        status = control.agents.get(resource.name)
        config = control.configs.get(resource.name)
        rows.append(
            {
                "name": resource.name,
                "region": resource.spec["region"],
                "enabled": resource.spec.get("enabled", True),
                "access": control.access.get(resource.name) or "ok",
                "has_token": resource.name in control.tokens,
                "canaries": len(config.canaries) if config else 0,
                "config_version": config.etag.strip('"') if config else None,
                "config_version_served": status.config_served.strip('"')
                if status and status.config_served
                else None,
                "last_pull": status.last_pull.isoformat() if status and status.last_pull else None,
                "last_results": status.last_results.isoformat()
                if status and status.last_results
                else None,
                "results_last_hour": recent.get(resource.name, 0),
            }
        )
    return rows


@router.get("/agents", summary="Agents with live status")
async def list_agents(request: Request) -> Response:
    denied = _guard(request)
    if denied is not None:
        return denied
    control = control_of(request)
    recent = await control.results_last_hour()
    return json_response({"agents": _agent_rows(control, recent)})


@router.get("/regions", summary="Regions with their agents' status")
async def list_regions(request: Request) -> Response:
    denied = _guard(request)
    if denied is not None:
        return denied
    control = control_of(request)
    recent = await control.results_last_hour()
    agents = _agent_rows(control, recent)
    regions = []
    for resource in control.resources_of("Region"):
        members = [a for a in agents if a["region"] == resource.name]
        regions.append(
            {
                "name": resource.name,
                "displayName": resource.spec.get("displayName"),
                "location": resource.spec.get("location"),
                "enabled": resource.spec.get("enabled", True),
                "agents": [a["name"] for a in members],
                "results_last_hour": sum(a["results_last_hour"] for a in members),
            }
        )
    return json_response({"regions": regions})


@router.post("/agents/{name}/token", summary="Mint or rotate an agent's token (shown once)")
async def mint(request: Request, name: str) -> Response:
    denied = _guard(request)
    if denied is not None:
        return denied
    control = control_of(request)
    if name not in control.access:
        return problem(404, f"agent {name} is not in the configuration")
    token = await control.mint_token(name)
    return json_response({"agent": name, "token": token}, 201)
