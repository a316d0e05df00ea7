"""mParticle's Events API: POST /v2/events, /v2/bulkevents, /v2/bulkevents/historical."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from milepost.api.security import require_token
from milepost.errors import RequestTooLarge
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
