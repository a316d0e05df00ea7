"""mParticle's Events API: POST /v2/events, /v2/bulkevents, /v2/bulkevents/historical."""

from __future__ import annotations

import inspect

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from milepost.api.security import require_token
from milepost.errors import MilepostError, RequestTooLarge
from milepost.runtime import Runtime

router = APIRouter(prefix="/v2", tags=["events"])


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; refuse early on a declared or actual larger body."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _accept(request: Request, endpoint: str) -> Response:
    runtime: Runtime = request.app.state.runtime
    service = runtime.ingest
    inp = service.inputs.authenticate(request.headers.get("authorization"))
    received_at = runtime.clock.now_ms()
    body = await _read_body(request, service.max_request_bytes)
    accepted = await service.accept_for_input(inp.id, body, endpoint, received_at)
    headers = {}
    if accepted.warnings:
        # Header values must be one line of latin-1; keep it short and count the rest.
        text = "; ".join(accepted.warnings[:20])
        if len(accepted.warnings) > 20:
            text += f"; and {len(accepted.warnings) - 20} more"
        headers["X-Milepost-Warnings"] = text.encode("latin-1", "replace").decode("latin-1")
    return Response(status_code=202, headers=headers)


@router.post("/events", status_code=202, summary="Upload one batch")
async def events(request: Request) -> Response:
    return await _accept(request, "events")


@router.post("/bulkevents", status_code=202, summary="Upload up to 100 batches")
async def bulk_events(request: Request) -> Response:
    return await _accept(request, "bulkevents")


@router.post("/bulkevents/historical", status_code=202, summary="Upload historical batches (analysis only)")
async def historical(request: Request) -> Response:
    return await _accept(request, "historical")


ENDPOINTS = {
    "/v2/events": "events",
    "/v2/bulkevents": "bulkevents",
    "/v2/bulkevents/historical": "historical",
}


class EventsLane:
    """ASGI middleware that answers the Events API's POSTs without the framework's routing.

    They are nearly all of a busy server's requests, and routing plus the per-route machinery cost
    about as much CPU as validating a small request. The routes above stay: they document the API
    and take whatever this lane passes on. Errors get the app's own exception handlers, so the
    responses are the same either way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _accept(request, endpoint)
        except MilepostError as exc:
            handlers = request.app.exception_handlers
            handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


imports = APIRouter(prefix="/api/v1", tags=["inputs"], dependencies=[Depends(require_token)])


@imports.post(
    "/inputs/{ref}/batches", status_code=202, summary="Import bulk batches into an input (CLI import)"
)
async def import_batches(ref: int, request: Request, historical: bool = False) -> Response:
    runtime: Runtime = request.app.state.runtime
    inp = runtime.catalog.get_input(ref)
    received_at = runtime.clock.now_ms()
    body = await _read_body(request, runtime.ingest.max_request_bytes)
    await runtime.ingest.accept_for_input(
        inp.id, body, "historical" if historical else "bulkevents", received_at
    )
    return Response(status_code=202)
