"""Workspaces, inputs and account settings under /api/v1."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from milepost.api.security import require_token
from milepost.catalog import Input
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["account"], dependencies=[Depends(require_token)])

Platform = Literal["ios", "android", "web", "server", "feed"]


class _Body(BaseModel):
    # Strict: "5" is not a number and "yes" is not a boolean; the caller gets a 400 naming the field.
    model_config = ConfigDict(extra="forbid", strict=True)


class WorkspaceIn(_Body):
    name: str = Field(min_length=1, max_length=100)


class InputIn(_Body):
    workspace: int | str
    name: str = Field(min_length=1, max_length=100)
    platform: Platform


class InputPatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    enabled: bool | None = None


class SettingsPatch(_Body):
    audience_limit: int | None = None
    lookback_days: int | None = None
    profile_lifetime_days: int | None = None
    retention_days: int | None = None


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _input(inp: Input, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": inp.id,
        "workspace": {"id": inp.workspace_id, "name": inp.workspace_name},
        "name": inp.name,
        "platform": inp.platform,
        "kind": inp.kind,
        "key": inp.key,
        "enabled": inp.enabled,
        "created_at": inp.created_at,
    }
    if secret is not None:
        out["secret"] = secret
    return out


@router.get("/workspaces")
def list_workspaces(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    inputs = rt.catalog.list_inputs()
    return {
        "workspaces": [
            {**asdict(w), "inputs": [_input(i) for i in inputs if i.workspace_id == w.id]}
            for w in rt.catalog.list_workspaces()
        ]
    }


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceIn, request: Request) -> dict[str, Any]:
    return asdict(_rt(request).catalog.create_workspace(body.name))


@router.get("/workspaces/{ref}")
def get_workspace(ref: int, request: Request) -> dict[str, Any]:
    return asdict(_rt(request).catalog.get_workspace(ref))


@router.patch("/workspaces/{ref}")
def rename_workspace(ref: int, body: WorkspaceIn, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    ws = rt.catalog.rename_workspace(ref, body.name)
    rt.inputs.invalidate()
    return asdict(ws)


@router.delete("/workspaces/{ref}", status_code=204)
def delete_workspace(ref: int, request: Request) -> Response:
    _rt(request).catalog.delete_workspace(ref)
    return Response(status_code=204)


@router.get("/inputs")
def list_inputs(request: Request) -> dict[str, Any]:
    return {"inputs": [_input(i) for i in _rt(request).catalog.list_inputs()]}


@router.post("/inputs", status_code=201)
def create_input(body: InputIn, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    inp, secret = rt.catalog.create_input(body.workspace, body.name, body.platform)
    rt.inputs.invalidate()
    return _input(inp, secret)


@router.get("/inputs/{ref}")
def get_input(ref: int, request: Request) -> dict[str, Any]:
    return _input(_rt(request).catalog.get_input(ref))


@router.patch("/inputs/{ref}")
def update_input(ref: int, body: InputPatch, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    inp = rt.catalog.get_input(ref)
    if body.name is not None:
        inp = rt.catalog.rename_input(ref, body.name)
    if body.enabled is not None:
        inp = rt.catalog.set_input_enabled(ref, body.enabled)
    rt.inputs.invalidate()
    return _input(inp)


@router.post("/inputs/{ref}/rotate-secret")
def rotate_secret(ref: int, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    inp, secret = rt.catalog.rotate_input_secret(ref)
    rt.inputs.invalidate()
    return _input(inp, secret)


@router.delete("/inputs/{ref}", status_code=204)
def delete_input(ref: int, request: Request) -> Response:
    rt = _rt(request)
    rt.catalog.delete_input(ref)
    rt.inputs.invalidate()
    return Response(status_code=204)


def _settings(rt: Runtime) -> dict[str, Any]:
    s = rt.catalog.get_settings()
    activated = rt.catalog.activated_count()
    return {
        "audience_limit": s.audience_limit,
        "activated": activated,
        "available": max(0, s.audience_limit - activated),
        "lookback_days": s.lookback_days,
        "profile_lifetime_days": s.effective_profile_lifetime_days,
        "retention_days": s.retention_days,
    }


@router.get("/settings")
def get_settings(request: Request) -> dict[str, Any]:
    return _settings(_rt(request))


@router.patch("/settings")
def patch_settings(body: SettingsPatch, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    changes = body.model_dump(exclude_unset=True)
    rt.catalog.update_settings(**changes)
    if changes.keys() & {"lookback_days", "profile_lifetime_days"}:
        rt.journeys.refresh()  # windows and lifetimes changed: re-evaluate
    return _settings(rt)
