"""Bearer-token authentication for the management API."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from milepost.catalog import ApiToken
from milepost.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(
    auto_error=False, description="An API token created by `milepost init` or the tokens API"
)


async def require_token(request: Request) -> ApiToken:
    creds: HTTPAuthorizationCredentials | None = await _bearer(request)
    if creds is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = request.app.state.runtime.catalog.verify_token(creds.credentials)
    if token is None:
        raise Forbidden("unknown or revoked API token")
    return token
