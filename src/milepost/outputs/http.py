"""One POST to a partner, turned into an `Attempt`: the part every HTTP output shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from milepost import __version__
from milepost.errors import InvalidRequest
from milepost.outputs.network import UrlRefused, check_url
from milepost.outputs.policy import Attempt

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 120.0
USER_AGENT = f"milepost/{__version__}"


def post(
    http: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    allow_private: bool,
) -> tuple[Attempt, httpx.Response | None]:
    """POST `body` (JSON) to `url`: the attempt, and the response when there was one."""
    try:
        check_url(url, allow_private=allow_private)
    except UrlRefused as refused:
        return Attempt(None, error=str(refused), refused=True), None
    except OSError as error:  # the name did not resolve: perhaps a passing DNS failure
        return Attempt(None, error=f"cannot resolve the output url's host: {error}"), None
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        resp = http.post(url, content=body, headers=sent, timeout=timeout_s, follow_redirects=False)
    except httpx.TimeoutException as error:
        return Attempt(None, error=type(error).__name__, timed_out=True), None
    except httpx.HTTPError as error:
        return Attempt(None, error=f"{type(error).__name__}: {error}"), None
    attempt = Attempt(resp.status_code, retry_after=resp.headers.get("Retry-After"), body=resp.text[:2000])
    return attempt, resp


def json_body(resp: httpx.Response | None) -> Any:
    """The response's JSON, or None when it has none."""
    if resp is None or not resp.content:
        return None
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None


# checking settings


def url_setting(settings: Mapping[str, Any], name: str, *, allow_private: bool) -> str:
    try:
        return check_url(settings.get(name), allow_private=allow_private, resolve=False)
    except UrlRefused as refused:
        raise InvalidRequest(f"settings.{name}: {refused}") from None


def text_setting(settings: Mapping[str, Any], name: str, *, required: bool, what: str) -> str | None:
    value = settings.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"settings.{name}: {what}")
    return value.strip()


def timeout_setting(settings: Mapping[str, Any], name: str = "timeout_s") -> float:
    value = settings.get(name)
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidRequest(f"settings.{name}: a number of seconds above 0 (got {value!r})")
    return min(float(value), MAX_TIMEOUT_S)


def batch_setting(settings: Mapping[str, Any], default: int, upper: int, name: str = "batch_size") -> int:
    value = settings.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise InvalidRequest(f"settings.{name}: a whole number from 1 to {upper} (got {value!r})")
    return value
