"""A clock tests can move in a running server, present only when it was started with MILEPOST_FAKE_CLOCK."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from milepost.api.security import require_token
from milepost.clock import ManualClock
from milepost.errors import InvalidRequest
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1/test", tags=["testing"], dependencies=[Depends(require_token)])


class ClockIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    now_ms: int


@router.post("/clock")
def set_clock(body: ClockIn, request: Request) -> dict[str, Any]:
    """Move the clock, then process everything due by then (first calculations, new batches, timers)."""
    rt: Runtime = request.app.state.runtime
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    if body.now_ms < clock.now_ms():
        raise InvalidRequest("now_ms: the clock never goes backwards")
    clock.set(body.now_ms)
    rt.writer.run_exclusive(lambda: None)  # every accepted batch is committed
    rt.journeys.settle()
    rt.audiences.advance(body.now_ms)
    rt.audiences.catch_up(body.now_ms)
    return {"now_ms": clock.now_ms()}
