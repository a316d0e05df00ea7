"""Journeys and milestones under /api/v1 (SPEC §7.1–7.2); every change accepts `?dry_run=true`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from milepost.api.security import require_token
from milepost.catalog.journey_records import MilestoneRecord
from milepost.errors import InvalidRequest
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["journeys"], dependencies=[Depends(require_token)])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MilestoneDoc(_Body):
    name: str = Field(min_length=1, max_length=200)
    criteria: dict[str, Any] | None = None
    remaining: bool = False
    children: list[MilestoneDoc] = Field(default_factory=list)
    connections: list[dict[str, Any]] = Field(default_factory=list)


class JourneyDoc(_Body):
    name: str = Field(min_length=1, max_length=200)
    inputs: list[str | int] | None = None
    milestones: list[MilestoneDoc] = Field(default_factory=list)


class JourneyPatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    inputs: list[str | int] | None = None


class MilestoneIn(_Body):
    parent_id: int | None = None
    position: int | None = Field(default=None, ge=0)
    name: str = Field(min_length=1, max_length=200)
    criteria: dict[str, Any] | None = None
    remaining: bool = False


class MilestonePatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    criteria: dict[str, Any] | None = None
    position: int | None = Field(default=None, ge=0)


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _milestone(rt: Runtime, m: MilestoneRecord) -> dict[str, Any]:
    views = rt.views
    out: dict[str, Any] = {
        "id": m.id,
        "journey_id": m.journey_id,
        "parent_id": m.parent_id,
        "position": m.position,
        "name": m.name,
    }
    if m.remaining:
        out["remaining"] = True
    else:
        out["criteria"] = m.criteria
    out["audience"] = views.audience(m.audience_id)
    return out


@router.get("/journeys")
def list_journeys(request: Request) -> dict[str, Any]:
    return {"journeys": _rt(request).views.journey_list()}


@router.post("/journeys", status_code=201)
def create_journey(body: JourneyDoc, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    document = body.model_dump(exclude_none=True)
    if any(_has_connections(m) for m in document.get("milestones", [])):
        raise InvalidRequest("connections in a journey document are applied with `milepost journeys apply`")
    journey_id = rt.journeys.create(document)
    return rt.views.document(journey_id)


def _has_connections(m: dict[str, Any]) -> bool:
    return bool(m.get("connections")) or any(_has_connections(c) for c in m.get("children", []))


@router.get("/journeys/{journey_id}")
def get_journey(journey_id: int, request: Request) -> dict[str, Any]:
    return _rt(request).views.document(journey_id)


@router.patch("/journeys/{journey_id}", response_model=None)
def patch_journey(
    journey_id: int, body: JourneyPatch, request: Request, dry_run: bool = False
) -> dict[str, Any]:
    rt = _rt(request)
    if body.inputs is not None:
        report = rt.journeys.set_inputs(journey_id, body.inputs, dry_run=dry_run)
        if dry_run and report is not None:
            return report
    if body.name is not None and not dry_run:
        rt.journeys.rename(journey_id, body.name)
    return rt.views.document(journey_id)


@router.delete("/journeys/{journey_id}", status_code=204)
def delete_journey(journey_id: int, request: Request) -> Response:
    _rt(request).journeys.delete(journey_id)
    return Response(status_code=204)


@router.post("/journeys/{journey_id}/milestones", status_code=201, response_model=None)
def add_milestone(journey_id: int, body: MilestoneIn, request: Request, dry_run: bool = False) -> Any:
    rt = _rt(request)
    if not body.remaining and body.criteria is None:
        raise InvalidRequest(
            "criteria: required for a milestone (or set remaining: true for a remaining users split)"
        )
    if body.remaining and body.criteria is not None:
        raise InvalidRequest("criteria: a remaining users split has no criteria of its own")
    result = rt.journeys.add_milestone(
        journey_id,
        parent_id=body.parent_id,
        name=body.name,
        criteria=body.criteria,
        remaining=body.remaining,
        position=body.position,
        dry_run=dry_run,
    )
    if isinstance(result, dict):  # a dry run creates nothing
        return JSONResponse(result, status_code=200)
    return _milestone(rt, result)


@router.get("/milestones/{milestone_id}")
def get_milestone(milestone_id: int, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return _milestone(rt, rt.catalog.get_milestone(milestone_id))


@router.patch("/milestones/{milestone_id}", response_model=None)
def patch_milestone(milestone_id: int, body: MilestonePatch, request: Request, dry_run: bool = False) -> Any:
    rt = _rt(request)
    result = rt.journeys.update_milestone(
        milestone_id, name=body.name, criteria=body.criteria, position=body.position, dry_run=dry_run
    )
    return result if isinstance(result, dict) else _milestone(rt, result)


@router.delete("/milestones/{milestone_id}", status_code=204, response_model=None)
def delete_milestone(milestone_id: int, request: Request, dry_run: bool = False) -> Any:
    report = _rt(request).journeys.delete_milestone(milestone_id, dry_run=dry_run)
    if report is not None:  # a dry run deletes nothing and answers its report
        return JSONResponse(report, status_code=200)
    return Response(status_code=204)
