"""Liveness, readiness, Prometheus metrics and the audience engine's recent evaluations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import ORJSONResponse, PlainTextResponse, Response

from milepost.api.security import require_token
from milepost.audiences.evaluations import KEEP
from milepost.metrics import render
from milepost.runtime import Runtime

router = APIRouter(tags=["operations"])
evaluations = APIRouter(prefix="/api/v1", tags=["operations"], dependencies=[Depends(require_token)])


@evaluations.get("/evaluations", summary="The audience engine's latest evaluations, oldest first")
def recent_evaluations(request: Request, limit: int = Query(default=100, ge=1, le=KEEP)) -> dict[str, Any]:
    """When each ran and committed, the change log's rows it wrote, and how long its batches and
    due timers waited (milliseconds)."""
    rt: Runtime = request.app.state.runtime
    return {"evaluations": [e.as_json() for e in rt.evaluations.recent(limit)]}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    backlog = rt.writer.backlog
    ok = rt.writer.is_alive and backlog < 10_000
    body = {
        "status": "ready" if ok else "not ready",
        "writer_backlog": backlog,
        "last_error": rt.writer.last_error,
    }
    return ORJSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> str:
    rt: Runtime = request.app.state.runtime
    lines = [
        "# HELP milepost_ingest_batches_accepted_total Batches stored, by input and endpoint.",
        "# TYPE milepost_ingest_batches_accepted_total counter",
    ]
    for (input_id, endpoint), n in sorted(rt.ingest.accepted.items()):
        lines.append(
            f'milepost_ingest_batches_accepted_total{{input="{input_id}",endpoint="{endpoint}"}} {n}'
        )
    lines += [
        "# HELP milepost_ingest_requests_rejected_total Requests refused, by reason.",
        "# TYPE milepost_ingest_requests_rejected_total counter",
    ]
    for reason, n in sorted(rt.ingest.rejected.items()):
        lines.append(f'milepost_ingest_requests_rejected_total{{reason="{reason}"}} {n}')
    lines += [
        "# HELP milepost_ingest_warnings_total Values truncated or dropped by the size limits, by input.",
        "# TYPE milepost_ingest_warnings_total counter",
    ]
    for input_id, n in sorted(rt.ingest.warnings.items()):
        lines.append(f'milepost_ingest_warnings_total{{input="{input_id}"}} {n}')
    stats = rt.store.stats()
    lines += [
        "# HELP milepost_store_bytes Bytes on disk of the store.",
        "# TYPE milepost_store_bytes gauge",
        f"milepost_store_bytes {stats['store_bytes']}",
        "# HELP milepost_users Profiles in the store.",
        "# TYPE milepost_users gauge",
        f"milepost_users {stats['users']}",
        "# HELP milepost_writer_backlog Requests waiting for a group commit.",
        "# TYPE milepost_writer_backlog gauge",
        f"milepost_writer_backlog {rt.writer.backlog}",
        "# HELP milepost_writer_commits_total Durable group commits.",
        "# TYPE milepost_writer_commits_total counter",
        f"milepost_writer_commits_total {rt.writer.commits}",
    ]
    lines += rt.delivery.metrics()
    return "\n".join(lines) + "\n" + rt.evaluations.metrics() + render(rt.views.estimate_latency)
