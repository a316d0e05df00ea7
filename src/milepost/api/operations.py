"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse, PlainTextResponse, Response

from milepost.runtime import Runtime

router = APIRouter(tags=["operations"])


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
    return "\n".join(lines) + "\n"
