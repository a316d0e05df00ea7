"""User profiles: GET /api/v1/users/{mpid}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from milepost.api.security import require_token
from milepost.errors import NotFound
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["users"], dependencies=[Depends(require_token)])


@router.get("/users/{mpid}")
def get_user(mpid: int, request: Request) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    profile = rt.store.profile(mpid)
    if profile is None:
        raise NotFound(f"no user with mpid {mpid}")
    names = {i.id: i.name for i in rt.catalog.list_inputs()}
    profile["inputs"] = [{"id": i, "name": names.get(i)} for i in profile.pop("input_ids")]
    for ev in profile["recent_events"]:
        ev["input"] = names.get(ev["input_id"])
    profile["memberships"] = rt.views.memberships_of(mpid)
    return profile
