"""The operator API: regions and agents with live status, tokens, and edits committed to git."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ParamSpec

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from reconciler.core import config_edits
from reconciler.core.refusal import RequestRefused
from reconciler.server.control_plane import ControlPlane
from reconciler.server.http.common import (
    control_of,
    controllers_of,
    json_response,
    read_model,
    require_admin,
)
from reconciler.server.http.docs import errors, json_body, model_schema
from reconciler.server.operator_edits import Committed, Edit, OperatorEdits
from schemas.base import AgentName, Slug

router = APIRouter(prefix="/operator", tags=["operator"])
P = ParamSpec("P")


def _agent_rows(
    control: ControlPlane, recent: Mapping[str, int], silent: Mapping[str, datetime] | None = None
) -> list[dict[str, Any]]:
    """Each agent of the served revision; `silent`: the silent ones, with when they were last
    heard from (None: silence is not watched)."""
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
                "silent": None if silent is None else resource.name in silent,
            }
        )
    return rows


def _silent(request: Request) -> Mapping[str, datetime] | None:
    silence = controllers_of(request).silence
    return silence.silent if silence is not None else None


@router.get("/agents", summary="Agents with live status", responses=errors(401, 404))
async def list_agents(request: Request) -> Response:
    require_admin(request)
    control = control_of(request)
    recent = await control.results_last_hour()
    return json_response({"agents": _agent_rows(control, recent, _silent(request))})


def _region_rows(control: ControlPlane, recent: Mapping[str, int]) -> list[dict[str, Any]]:
    """Each region of the served revision, its agents, and the rows stored in it over the
    last hour (`recent`, by region: the server's own `local` checks count in its region)."""
    agents = control.resources_of("Agent")
    regions = []
    for resource in control.resources_of("Region"):
        regions.append(
            {
                "name": resource.name,
                "displayName": resource.spec.get("displayName"),
                "location": resource.spec.get("location"),
                "enabled": resource.spec.get("enabled", True),
                "agents": [a.name for a in agents if a.spec["region"] == resource.name],
                "results_last_hour": recent.get(resource.name, 0),
            }
        )
    return regions


@router.get("/regions", summary="Regions with their agents' status", responses=errors(401, 404))
async def list_regions(request: Request) -> Response:
    require_admin(request)
    control = control_of(request)
    recent = await control.region_results_last_hour()
    return json_response({"regions": _region_rows(control, recent)})


@router.post(
    "/agents/{name}/token",
    summary="Mint or rotate an agent's token (shown once)",
    responses=errors(401, 404),
)
async def mint(request: Request, name: str) -> Response:
    require_admin(request)
    control = control_of(request)
    if name not in control.access:
        raise RequestRefused(404, f"agent {name} is not in the configuration")
    token = await control.mint_token(name)
    return json_response({"agent": name, "token": token}, 201)


# -- edits: every write is a commit to the config repository, then a reconcile ----------------


REGION_FIELDS = {
    "name": "the region's name: lowercase letters, digits and '-' (required to create; "
    "a different name renames)",
    "displayName": "a string shown on the site (null removes it)",
    "location": "free text such as 'Frankfurt, DE' (null removes it)",
    "enabled": "true or false",
}
AGENT_FIELDS = {
    "name": "the agent's name: lowercase letters, digits and '-' (required to create; "
    "a different name renames)",
    "region": "the name of an existing region (required to create; a different one moves it)",
    "enabled": "true or false",
    "labels": "an object of string values (replaces all labels; null removes them)",
}
NOT_NULL = frozenset({"name", "region", "enabled"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RegionCreate(_Body):
    """Body of `POST /operator/regions`."""

    name: Slug
    displayName: str | None = None
    location: str | None = None
    enabled: bool | None = None


class RegionPatch(_Body):
    """Body of `PATCH /operator/regions/{name}`: only the fields given change."""

    name: Slug | None = None
    displayName: str | None = None
    location: str | None = None
    enabled: bool | None = None


class AgentCreate(_Body):
    """Body of `POST /operator/agents`."""

    name: AgentName
    region: Slug
    enabled: bool | None = None
    labels: dict[str, str] | None = None


class AgentPatch(_Body):
    """Body of `PATCH /operator/agents/{name}`: only the fields given change."""

    name: AgentName | None = None
    region: Slug | None = None
    enabled: bool | None = None
    labels: dict[str, str] | None = None


async def _parse_body(
    request: Request, model: type[_Body], expected: dict[str, str], patch: bool = False
) -> dict[str, Any]:
    """The fields a JSON body gives, validated.

    Raises:
        RequestRefused: 413 or 422, saying what was expected.
    """
    body = await read_model(request, model, expected)
    given = body.model_fields_set
    fields = {key: getattr(body, key) for key in type(body).model_fields if key in given}
    nulls = sorted(key for key in fields if key in NOT_NULL and fields[key] is None)
    if nulls:
        errors = [f"{key}: may not be null" for key in nulls]
        raise RequestRefused(422, "invalid body", errors=errors, expected=expected)
    if patch and not fields:
        raise RequestRefused(422, "nothing to change: give at least one field", expected=expected)
    return fields


EDIT_ERRORS = errors(401, 404, 408, 409, 413, 415, 422)


async def _commit(request: Request, edit: Edit) -> Committed:
    edits: OperatorEdits = request.app.state.operator_edits
    return await edits.commit(edit)


async def _region_response(control: ControlPlane, done: Committed, status: int) -> Response:
    rows = _region_rows(control, await control.region_results_last_hour())
    region = next((r for r in rows if r["name"] == done.edited.name), None)
    return json_response({"region": region, **done.document()}, status)


async def _agent_response(
    control: ControlPlane, done: Committed, status: int, token: str | None = None
) -> Response:
    recent = await control.results_last_hour()
    agent = next((a for a in _agent_rows(control, recent) if a["name"] == done.edited.name), None)
    extra = {"token": token} if token is not None else {}
    return json_response({"agent": agent, **extra, **done.document()}, status)


async def _revoke(control: ControlPlane, agent: str) -> bool:
    """Revoke a removed or renamed agent's token."""
    return await control.revoke_token(agent)


@router.post(
    "/regions",
    summary="Create a region (committed to the config repository)",
    responses=EDIT_ERRORS,
    openapi_extra=json_body(model_schema(RegionCreate)),
)
async def create_region(request: Request) -> Response:
    """Commit a new Region document; 201 with the region and the new revision."""
    require_admin(request)
    fields = await _parse_body(request, RegionCreate, REGION_FIELDS)
    name = str(fields.pop("name"))
    control = control_of(request)
    done = await _commit(
        request, lambda tree, schema: config_edits.create_region(tree, name, fields, schema)
    )
    return await _region_response(control, done, 201)


@router.patch(
    "/regions/{name}",
    summary="Rename, relocate, enable or disable a region",
    responses=EDIT_ERRORS,
    openapi_extra=json_body(model_schema(RegionPatch)),
)
async def update_region(request: Request, name: str) -> Response:
    """Commit changes to a region (a rename also moves its agents); 200 with the region."""
    require_admin(request)
    fields = await _parse_body(request, RegionPatch, REGION_FIELDS, patch=True)
    control = control_of(request)
    local = control.settings.local_region
    done = await _commit(
        request, lambda tree, _: config_edits.update_region(tree, name, fields, local)
    )
    return await _region_response(control, done, 200)


@router.delete(
    "/regions/{name}",
    summary="Delete a region no agent or canary uses",
    responses=errors(401, 404, 409, 422),
)
async def delete_region(request: Request, name: str) -> Response:
    """Commit the removal of a region; 409 while agents or canaries are in it."""
    require_admin(request)
    control = control_of(request)
    canaries = [
        r.name for r in control.resources_of("DerivedCanary") if r.spec.get("region") == name
    ]
    done = await _commit(request, lambda tree, _: config_edits.delete_region(tree, name, canaries))
    return json_response({"deleted": {"kind": "Region", "name": name}, **done.document()})


@router.post(
    "/agents",
    summary="Create an agent and mint its token (shown once)",
    responses=EDIT_ERRORS,
    openapi_extra=json_body(model_schema(AgentCreate)),
)
async def create_agent(request: Request) -> Response:
    """Commit a new Agent document, then mint its token; 201 with the token, shown once."""
    require_admin(request)
    fields = await _parse_body(request, AgentCreate, AGENT_FIELDS)
    name = str(fields.pop("name"))
    control = control_of(request)
    done = await _commit(
        request, lambda tree, schema: config_edits.create_agent(tree, name, fields, schema)
    )
    token = await control.mint_token(name)
    return await _agent_response(control, done, 201, token)


@router.patch(
    "/agents/{name}",
    summary="Rename, move, enable or disable an agent, set labels",
    responses=EDIT_ERRORS,
    openapi_extra=json_body(model_schema(AgentPatch)),
)
async def update_agent(request: Request, name: str) -> Response:
    """Commit changes to an agent; a rename revokes the old token and returns a new one."""
    require_admin(request)
    fields = await _parse_body(request, AgentPatch, AGENT_FIELDS, patch=True)
    control = control_of(request)
    done = await _commit(request, lambda tree, _: config_edits.update_agent(tree, name, fields))
    token = None
    if done.edited.previous is not None:
        # A token names its agent: the old one cannot work under the new name.
        await _revoke(control, done.edited.previous)
        token = await control.mint_token(done.edited.name)
    return await _agent_response(control, done, 200, token)


@router.delete(
    "/agents/{name}",
    summary="Delete an agent and revoke its token",
    responses=errors(401, 404, 409, 422),
)
async def delete_agent(request: Request, name: str) -> Response:
    """Commit the removal of an agent and revoke its token."""
    require_admin(request)
    control = control_of(request)
    done = await _commit(request, lambda tree, _: config_edits.delete_agent(tree, name))
    revoked = await _revoke(control, name)
    return json_response(
        {"deleted": {"kind": "Agent", "name": name}, "token_revoked": revoked, **done.document()}
    )
