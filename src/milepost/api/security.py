"""Authentication for the management API: a bearer token, or the web UI's session cookie."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from milepost.catalog import ApiToken
from milepost.errors import Forbidden, Unauthorized
from milepost.web.session import COOKIE, CSRF_HEADER, codec_of

_bearer = HTTPBearer(
    auto_error=False, description="An API token created by `milepost init` or the tokens API"
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_token(request: Request) -> ApiToken:
    creds: HTTPAuthorizationCredentials | None = await _bearer(request)
    if creds is None:
        return _session_token(request)
    token = request.app.state.runtime.catalog.verify_token(creds.credentials)
    if token is None:
        raise Forbidden("unknown or revoked API token")
    return token


def _session_token(request: Request) -> ApiToken:
    """The token of the UI's session cookie; changes also need the page's CSRF token in a header."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    codec = codec_of(request.app.state)
    plaintext = codec.open(cookie)
    token = request.app.state.runtime.catalog.verify_token(plaintext) if plaintext else None
    if token is None:
        raise Unauthorized("the session expired or its token was revoked: sign in again")
    if request.method not in _SAFE_METHODS and not codec.csrf_ok(cookie, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header for a request signed in with a session")
    return token
