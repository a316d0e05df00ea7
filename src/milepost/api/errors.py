"""The one map from MilepostError classes to HTTP statuses, and the two error body shapes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from milepost import errors as e

STATUS: list[tuple[type[e.MilepostError], int]] = [
    (e.RequestTooLarge, 413),
    (e.InvalidRequest, 400),
    (e.Unauthorized, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.RateLimited, 429),
    (e.Unavailable, 503),
    (e.StoreLocked, 503),
    (e.EngineError, 500),
]


def status_of(exc: e.MilepostError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    request: Request, status: int, code: str, messages: list[str], headers: dict[str, str] | None = None
) -> Response:
    """Events API errors use mParticle's `errors` list; everything else `{"error": {...}}`."""
    body: Any
    if request.url.path.startswith("/v2"):
        body = {"errors": [{"code": code, "message": m} for m in messages]}
    else:
        body = {"error": {"code": code, "message": "; ".join(messages)}}
    return ORJSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.MilepostError)
    async def _milepost(request: Request, exc: e.MilepostError) -> Response:
        headers: dict[str, str] = {}
        if isinstance(exc, e.RateLimited | e.Unavailable):
            headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, e.Unauthorized):
            headers["WWW-Authenticate"] = (
                "Bearer" if request.url.path.startswith("/api") else 'Basic realm="milepost"'
            )
        messages = exc.errors if isinstance(exc, e.InvalidBatch) else [exc.message]
        if request.url.path.startswith("/v2"):
            request.app.state.runtime.ingest.rejected[exc.code] += 1
        return error_response(request, status_of(exc), exc.code, messages, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        messages = [
            ".".join(str(p) for p in err["loc"] if p not in ("body",)) + f": {err['msg']}"
            for err in exc.errors()
        ]
        return error_response(request, 400, "BAD_REQUEST", messages or ["invalid request"])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {
            400: "BAD_REQUEST",
            401: "UNAUTHORIZED",
            403: "FORBIDDEN",
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
        }.get(exc.status_code, "HTTP_ERROR")
        return error_response(request, exc.status_code, code, [str(exc.detail)])
