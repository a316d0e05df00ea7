"""`POST /api/v1/estimate`: the size of criteria that are not saved yet (the criteria builder types, we answer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from milepost.api.security import require_token
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["estimates"], dependencies=[Depends(require_token)])


class EstimateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    criteria: dict[str, Any]
    journey_id: int | None = None
    inputs: list[str | int] | None = Field(
        default=None, description="without journey_id: the inputs of the root"
    )
    parent_id: int | None = Field(default=None, description="the milestone the criteria would sit under")
    position: int | None = Field(
        default=None, ge=0, description="among the parent's milestones; default last"
    )


@router.post("/estimate")
def estimate(body: EstimateIn, request: Request) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    input_ids = None
    if body.inputs is not None:
        input_ids = tuple(sorted({rt.catalog.get_input(i).id for i in body.inputs}))
    journey_id: int | None = body.journey_id
    if body.parent_id is not None and journey_id is None:
        journey_id = rt.catalog.get_milestone(body.parent_id).journey_id
    if journey_id is not None:
        rt.catalog.get_journey(journey_id)
    return rt.views.adhoc(
        journey_id=journey_id,
        input_ids=input_ids,
        parent_id=body.parent_id,
        position=body.position,
        criteria=body.criteria,
    )
