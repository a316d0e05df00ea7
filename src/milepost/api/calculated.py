"""Calculated attribute definitions (SPEC §4.5) under /api/v1/calculated-attributes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from milepost.api.security import require_token
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["calculated attributes"], dependencies=[Depends(require_token)])


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/calculated-attributes")
def list_calculated(request: Request) -> dict[str, Any]:
    return {"calculated_attributes": [asdict(c) for c in _rt(request).catalog.list_calculated_attributes()]}


@router.post("/calculated-attributes", status_code=201)
def create_calculated(definition: dict[str, Any], request: Request) -> dict[str, Any]:
    """The body is the definition: `{name, calculation, event, attribute?, where?, window?}`."""
    rt = _rt(request)
    record = rt.catalog.create_calculated_attribute(definition)
    rt.journeys.refresh()
    return asdict(record)


@router.get("/calculated-attributes/{name}")
def get_calculated(name: str, request: Request) -> dict[str, Any]:
    return asdict(_rt(request).catalog.get_calculated_attribute(name))


@router.delete("/calculated-attributes/{name}", status_code=204)
def delete_calculated(name: str, request: Request) -> Response:
    rt = _rt(request)
    rt.catalog.delete_calculated_attribute(name)
    rt.journeys.refresh()
    return Response(status_code=204)
