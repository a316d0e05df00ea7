"""Audiences, their members and connections, and outputs, under /api/v1."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from milepost.api.security import require_token
from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.errors import Conflict, InvalidRequest, NotFound
from milepost.outputs import registry
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["audiences"], dependencies=[Depends(require_token)])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OutputIn(_Body):
    type: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict)
    accepted_identities: list[str] | None = None
    hashing: Literal["sha256", "sha1", "md5"] | None = None


class OutputPatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: dict[str, Any] | None = None


class ConnectionIn(_Body):
    output_id: int
    status: Literal["active", "inactive"] = "active"
    settings: dict[str, Any] = Field(default_factory=dict)
    on_deactivate: Literal["keep", "remove_members"] = "keep"


class ConnectionPatch(_Body):
    status: Literal["active", "inactive"] | None = None
    settings: dict[str, Any] | None = None
    on_deactivate: Literal["keep", "remove_members"] | None = None


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/audiences/{audience_id}")
def get_audience(audience_id: int, request: Request) -> dict[str, Any]:
    return _rt(request).views.audience(audience_id)


@router.get("/audiences/{audience_id}/members")
def get_members(
    audience_id: int, request: Request, limit: int = Query(default=100), cursor: str | None = None
) -> dict[str, Any]:
    return _rt(request).views.members(audience_id, limit, cursor)


@router.get("/audiences/{audience_id}/members.csv", response_class=StreamingResponse)
def get_members_csv(audience_id: int, request: Request) -> StreamingResponse:
    rows = _rt(request).views.members_csv(audience_id)
    first = next(rows)  # raises before the response starts when the audience does not exist
    return StreamingResponse(
        iter([first, *rows]),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="audience-{audience_id}.csv"'},
    )


def _output(o: OutputRecord) -> dict[str, Any]:
    """An output as the API shows it: its settings with every credential masked."""
    kind = registry.output_type(o.type)
    return {
        "id": o.id,
        "type": o.type,
        "name": o.name,
        "settings": registry.redacted(kind, o.settings),
        "accepted_identities": None if o.accepted_identities is None else list(o.accepted_identities),
        "hashing": o.hashing,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    }


def _checked_settings(rt: Runtime, type_name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings checked by their output type (InvalidRequest naming the field), as it will use them."""
    kind = registry.output_type(type_name.strip().lower())
    if kind is None:
        known = ", ".join(sorted(registry.output_types()))
        raise InvalidRequest(f"type: unknown output type {type_name!r}; the output types are {known}")
    checked = kind.check_settings(settings, allow_private=rt.delivery.settings.allow_private)
    # Keep what the user gave (the type's defaults apply when it is read) plus nothing unknown to JSON.
    return {**settings, **{k: v for k, v in checked.items() if k in settings}}


@router.get("/outputs")
def list_outputs(request: Request) -> dict[str, Any]:
    return {"outputs": [_output(o) for o in _rt(request).catalog.list_outputs()]}


@router.post("/outputs", status_code=201)
def create_output(body: OutputIn, request: Request) -> dict[str, Any]:
    """Create an output; the answer holds no settings (SPEC §7.2: secrets are never returned)."""
    rt = _rt(request)
    try:
        rt.catalog.get_output(body.name.strip())
    except NotFound:
        pass
    else:  # a taken name is the first thing to fix, whatever the settings
        raise Conflict(
            f"an output named {body.name.strip()!r} already exists; output names are unique in the account"
        )
    settings = _checked_settings(rt, body.type, body.settings)
    created = rt.catalog.create_output(
        body.type, body.name, settings, accepted_identities=body.accepted_identities, hashing=body.hashing
    )
    return {k: v for k, v in _output(created).items() if k != "settings"}


@router.get("/outputs/{output_id}")
def get_output(output_id: int, request: Request) -> dict[str, Any]:
    return _output(_rt(request).catalog.get_output(output_id))


@router.patch("/outputs/{output_id}")
def patch_output(output_id: int, body: OutputPatch, request: Request) -> dict[str, Any]:
    """Rename an output or replace its settings; a masked credential ("••••") keeps its stored value."""
    rt = _rt(request)
    settings = body.settings
    if settings is not None:
        current = rt.catalog.get_output(output_id)
        kind = registry.output_type(current.type)
        hidden = set(registry.secret_settings(kind))
        settings = {
            k: current.settings.get(k) if k in hidden and v == "••••" else v for k, v in settings.items()
        }
        settings = _checked_settings(rt, current.type, settings)
    return _output(rt.catalog.update_output(output_id, name=body.name, settings=settings))


@router.delete("/outputs/{output_id}", status_code=204)
def delete_output(output_id: int, request: Request) -> Response:
    _rt(request).catalog.delete_output(output_id)
    return Response(status_code=204)


def _connection(rt: Runtime, c: ConnectionRecord) -> dict[str, Any]:
    """A connection with its delivery: sent, pending, failed, ineligible, last error (SPEC §6)."""
    return {**asdict(c), "delivery": rt.delivery.stats(c.id, c.audience_id)}


@router.get("/audiences/{audience_id}/connections")
def list_connections(audience_id: int, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    rt.catalog.milestone_by_audience(audience_id)
    listed = rt.views.connections(audience_id)
    for c in listed:
        c["delivery"] = rt.delivery.stats(c["id"], audience_id)
    return {"connections": listed}


@router.post("/audiences/{audience_id}/connections", status_code=201)
def create_connection(audience_id: int, body: ConnectionIn, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    rt.catalog.milestone_by_audience(audience_id)
    c = rt.catalog.create_connection(
        audience_id,
        body.output_id,
        status=body.status,
        settings=body.settings,
        on_deactivate=body.on_deactivate,
    )
    rt.journeys.refresh()
    return _connection(rt, c)


@router.get("/connections/{connection_id}")
def get_connection(connection_id: int, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return _connection(rt, rt.catalog.get_connection(connection_id))


@router.get("/connections/{connection_id}/live")
def connection_live(
    connection_id: int, request: Request, limit: int = Query(default=100, ge=1, le=100)
) -> dict[str, Any]:
    """The connection's recent messages with the partner's answers, newest first."""
    rt = _rt(request)
    c = rt.catalog.get_connection(connection_id)
    return {
        "connection_id": c.id,
        "health": c.health,
        "delivery": rt.delivery.stats(c.id, c.audience_id),
        "messages": rt.delivery.live(c.id, limit),
        "dead_letters": rt.delivery.dead_letters(c.id, 20),
    }


@router.post("/connections/{connection_id}/resume")
def resume_connection(connection_id: int, request: Request) -> dict[str, Any]:
    """Resume a faulted connection: it sends its backlog, kept while it was paused."""
    rt = _rt(request)
    return _connection(rt, rt.delivery.resume(connection_id))


@router.patch("/connections/{connection_id}")
def patch_connection(connection_id: int, body: ConnectionPatch, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    c = rt.catalog.update_connection(
        connection_id, status=body.status, settings=body.settings, on_deactivate=body.on_deactivate
    )
    rt.journeys.refresh()
    out = _connection(rt, c)
    if body.status == "inactive":
        out["warning"] = (
            "the partner's copy of this audience may go out of sync while the connection is inactive"
        )
    return out


@router.delete("/connections/{connection_id}", status_code=204)
def delete_connection(connection_id: int, request: Request) -> Response:
    rt = _rt(request)
    rt.catalog.delete_connection(connection_id)
    rt.journeys.refresh()
    return Response(status_code=204)


class PlanCreate(_Body):
    audience_id: int
    output_id: int
    status: Literal["active", "inactive"] = "active"
    settings: dict[str, Any] | None = None
    on_deactivate: Literal["keep", "remove_members"] = "keep"


class PlanUpdate(_Body):
    connection_id: int
    status: Literal["active", "inactive"]


class ConnectionPlan(_Body):
    creates: list[PlanCreate] = Field(default_factory=list)
    updates: list[PlanUpdate] = Field(default_factory=list)


@router.post("/connection-plans", status_code=201)
def apply_connection_plan(body: ConnectionPlan, request: Request) -> dict[str, Any]:
    """Create and (de)activate several connections at once, checked as a whole against the credit limit."""
    rt = _rt(request)
    records = rt.catalog.apply_connection_plan(
        [(c.audience_id, c.output_id, c.status, c.settings or {}, c.on_deactivate) for c in body.creates],
        [(u.connection_id, u.status) for u in body.updates],
    )
    rt.journeys.refresh()
    return {"connections": [asdict(r) for r in records]}
