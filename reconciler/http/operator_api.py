"""The operator API: regions and agents with live status, tokens, and edits committed to git."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec
from weakref import WeakKeyDictionary

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler import configedit
from reconciler.configedit import ConfigTree, Edited, EditRefused
from reconciler.controlplane import ControlPlane
from reconciler.gitsource import GitSourceError
from reconciler.http.common import (
    BodyTooLarge,
    admin_denied,
    control_of,
    json_response,
    problem,
    read_body,
)
from reconciler.service import Session, Settings
from schemas.base import AgentName, Slug

router = APIRouter(prefix="/operator", tags=["operator"])
P = ParamSpec("P")


class _Refused(Exception):
    """A request the operator API answers with an error; `response` says why."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _answering(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Let a handler stop with `raise _Refused(problem(...))` anywhere in its helpers."""

    @functools.wraps(handler)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except _Refused as refused:
            return refused.response

    return answer


def _require_admin(request: Request) -> None:
    """Raises: _Refused: 401/403 without the admin token."""
    denied = admin_denied(request)
    if denied is not None:
        raise _Refused(denied)


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
@_answering
async def list_agents(request: Request) -> Response:
    _require_admin(request)
    control = control_of(request)
    recent = await control.results_last_hour()
    return json_response({"agents": _agent_rows(control, recent)})


def _region_rows(control: ControlPlane, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    return regions


@router.get("/regions", summary="Regions with their agents' status")
@_answering
async def list_regions(request: Request) -> Response:
    _require_admin(request)
    control = control_of(request)
    recent = await control.results_last_hour()
    return json_response({"regions": _region_rows(control, _agent_rows(control, recent))})


@router.post("/agents/{name}/token", summary="Mint or rotate an agent's token (shown once)")
@_answering
async def mint(request: Request, name: str) -> Response:
    _require_admin(request)
    control = control_of(request)
    if name not in control.access:
        return problem(404, f"agent {name} is not in the configuration")
    token = await control.mint_token(name)
    return json_response({"agent": name, "token": token}, 201)


# -- edits: every write is a commit to the config repository, then a reconcile ----------------

AUTHOR = "canary-reconciler operator API"
AUTHOR_EMAIL = "operator@canary-reconciler.invalid"
MAX_BODY_BYTES = 64 * 1024

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
        _Refused: 413 or 422, saying what was expected.
    """
    try:
        raw = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise _Refused(problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes")) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _Refused(problem(422, f"the body is not JSON: {error}", expected=expected)) from None
    if not isinstance(data, dict):
        raise _Refused(problem(422, "the body must be a JSON object", expected=expected))
    try:
        body = model.model_validate(data)
    except ValidationError as error:
        errors = [
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors()
        ]
        raise _Refused(problem(422, "invalid body", errors=errors, expected=expected)) from None
    given = body.model_fields_set
    fields = {key: getattr(body, key) for key in type(body).model_fields if key in given}
    nulls = sorted(key for key in fields if key in NOT_NULL and fields[key] is None)
    if nulls:
        errors = [f"{key}: may not be null" for key in nulls]
        raise _Refused(problem(422, "invalid body", errors=errors, expected=expected))
    if patch and not fields:
        raise _Refused(
            problem(422, "nothing to change: give at least one field", expected=expected)
        )
    return fields


@dataclass
class _Writer:
    """Serialises a control plane's edits; keeps a parse cache for validating them."""

    session: Session
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_writers: WeakKeyDictionary[ControlPlane, _Writer] = WeakKeyDictionary()


def _writer(control: ControlPlane) -> _Writer:
    writer = _writers.get(control)
    if writer is None:
        writer = _Writer(Session(Settings(local_region=control.settings.local_region)))
        _writers[control] = writer
    return writer


@dataclass(frozen=True)
class _Committed:
    edited: Edited
    revision: str | None
    changed: bool
    files: list[str]
    warnings: list[str]

    def document(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "changed": self.changed,
            "message": self.edited.message or None,
            "files": self.files,
            "warnings": self.warnings,
        }


Edit = Callable[[ConfigTree, configedit.SchemaFor], Edited]


async def _commit(control: ControlPlane, edit: Edit) -> _Committed:
    """Edit the working tree, validate, commit and reconcile.

    Nothing is written unless the edited config loads without errors; the files are put back
    when the commit fails.

    Raises:
        _Refused: why not (409 read-only or uncommitted edits, 422 invalid, 500 git failed).
    """
    location = control.source.writable
    if location is None:
        description = control.source.description
        raise _Refused(
            problem(
                409,
                f"{description} is read-only: the operator API commits to a local working tree "
                "the server owns; change this repository with a commit instead",
                repository=description,
            )
        )
    writer = _writer(control)
    async with writer.lock:
        root = configedit.config_root(location)
        top = Path(location.repo.working_tree_dir or root)
        tree = await asyncio.to_thread(configedit.read_tree, root)

        def schema_for(path: str, kind: str) -> str | None:
            return configedit.schema_reference(root, top, path, kind)

        try:
            edited = edit(tree, schema_for)
        except EditRefused as refused:
            raise _Refused(problem(refused.status, refused.message, **refused.details)) from None
        changes = tree.changes()
        if not changes:
            current = control.current.sha if control.current else None
            return _Committed(edited, current, False, [], [])
        dirty = await asyncio.to_thread(configedit.uncommitted, location, tree, list(changes))
        if dirty:
            raise _Refused(
                problem(
                    409,
                    "the files this edit touches have uncommitted changes in the server's working "
                    "tree; commit or discard them first",
                    files=dirty,
                )
            )
        checked = await asyncio.to_thread(configedit.validate, writer.session, tree)
        if checked.errors:
            raise _Refused(
                problem(
                    422,
                    "the edit would make the configuration invalid; nothing was changed",
                    errors=checked.errors,
                )
            )
        paths = await asyncio.to_thread(configedit.write_tree, root, changes)
        try:
            sha, attempt = await control.commit_and_reconcile(
                paths, edited.message, AUTHOR, AUTHOR_EMAIL
            )
        except GitSourceError as error:
            await asyncio.to_thread(configedit.restore_tree, root, tree, changes)
            raise _Refused(problem(500, str(error))) from None
    if not attempt.applied:
        raise _Refused(
            problem(
                500,
                f"committed {sha[:12]} but the control plane did not apply it",
                revision=sha,
                errors=attempt.errors,
            )
        )
    return _Committed(edited, sha, True, sorted(changes), checked.warnings)


async def _region_response(control: ControlPlane, done: _Committed, status: int) -> Response:
    recent = await control.results_last_hour()
    rows = _region_rows(control, _agent_rows(control, recent))
    region = next((r for r in rows if r["name"] == done.edited.name), None)
    return json_response({"region": region, **done.document()}, status)


async def _agent_response(
    control: ControlPlane, done: _Committed, status: int, token: str | None = None
) -> Response:
    recent = await control.results_last_hour()
    agent = next((a for a in _agent_rows(control, recent) if a["name"] == done.edited.name), None)
    extra = {"token": token} if token is not None else {}
    return json_response({"agent": agent, **extra, **done.document()}, status)


async def _revoke(control: ControlPlane, agent: str) -> bool:
    """Revoke a removed or renamed agent's token."""
    return await control.revoke_token(agent)


@router.post("/regions", summary="Create a region (committed to the config repository)")
@_answering
async def create_region(request: Request) -> Response:
    """Commit a new Region document; 201 with the region and the new revision."""
    _require_admin(request)
    fields = await _parse_body(request, RegionCreate, REGION_FIELDS)
    name = str(fields.pop("name"))
    control = control_of(request)
    done = await _commit(
        control, lambda tree, schema: configedit.create_region(tree, name, fields, schema)
    )
    return await _region_response(control, done, 201)


@router.patch("/regions/{name}", summary="Rename, relocate, enable or disable a region")
@_answering
async def update_region(request: Request, name: str) -> Response:
    """Commit changes to a region (a rename also moves its agents); 200 with the region."""
    _require_admin(request)
    fields = await _parse_body(request, RegionPatch, REGION_FIELDS, patch=True)
    control = control_of(request)
    local = control.settings.local_region
    done = await _commit(
        control, lambda tree, _: configedit.update_region(tree, name, fields, local)
    )
    return await _region_response(control, done, 200)


@router.delete("/regions/{name}", summary="Delete a region no agent or canary uses")
@_answering
async def delete_region(request: Request, name: str) -> Response:
    """Commit the removal of a region; 409 while agents or canaries are in it."""
    _require_admin(request)
    control = control_of(request)
    canaries = [
        r.name for r in control.resources_of("DerivedCanary") if r.spec.get("region") == name
    ]
    done = await _commit(control, lambda tree, _: configedit.delete_region(tree, name, canaries))
    return json_response({"deleted": {"kind": "Region", "name": name}, **done.document()})


@router.post("/agents", summary="Create an agent and mint its token (shown once)")
@_answering
async def create_agent(request: Request) -> Response:
    """Commit a new Agent document, then mint its token; 201 with the token, shown once."""
    _require_admin(request)
    fields = await _parse_body(request, AgentCreate, AGENT_FIELDS)
    name = str(fields.pop("name"))
    control = control_of(request)
    done = await _commit(
        control, lambda tree, schema: configedit.create_agent(tree, name, fields, schema)
    )
    token = await control.mint_token(name)
    return await _agent_response(control, done, 201, token)


@router.patch("/agents/{name}", summary="Rename, move, enable or disable an agent, set labels")
@_answering
async def update_agent(request: Request, name: str) -> Response:
    """Commit changes to an agent; a rename revokes the old token and returns a new one."""
    _require_admin(request)
    fields = await _parse_body(request, AgentPatch, AGENT_FIELDS, patch=True)
    control = control_of(request)
    done = await _commit(control, lambda tree, _: configedit.update_agent(tree, name, fields))
    token = None
    if done.edited.previous is not None:
        # A token names its agent: the old one cannot work under the new name.
        await _revoke(control, done.edited.previous)
        token = await control.mint_token(done.edited.name)
    return await _agent_response(control, done, 200, token)


@router.delete("/agents/{name}", summary="Delete an agent and revoke its token")
@_answering
async def delete_agent(request: Request, name: str) -> Response:
    """Commit the removal of an agent and revoke its token."""
    _require_admin(request)
    control = control_of(request)
    done = await _commit(control, lambda tree, _: configedit.delete_agent(tree, name))
    revoked = await _revoke(control, name)
    return json_response(
        {"deleted": {"kind": "Agent", "name": name}, "token_revoked": revoked, **done.document()}
    )
