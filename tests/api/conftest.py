"""Helpers for Events API tests against a real `milepost serve` process."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.support.server import Server

ERROR_CODES_BY_STATUS = {
    400: {"BAD_REQUEST"},
    401: {"UNAUTHORIZED"},
    403: {"FORBIDDEN"},
    413: {"REQUEST_TOO_LARGE"},
    429: {"RATE_LIMITED"},
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def custom_event(name: str = "Clicked", **data: Any) -> dict[str, Any]:
    return {"event_type": "custom_event", "data": {"event_name": name, "custom_event_type": "other", **data}}


def error_messages(resp: httpx.Response, status: int) -> list[str]:
    """Assert the documented Events API error shape and return its messages."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for err in errors:
        assert isinstance(err, dict), body
        assert err.get("code") in ERROR_CODES_BY_STATUS.get(status, {err.get("code")}), body
        assert isinstance(err.get("message"), str) and err["message"].strip(), body
    return [err["message"] for err in errors]


@dataclass
class Api:
    """Clients for one server: `events` authenticates as the default input, `admin` with the admin token."""

    server: Server
    creds: dict
    events: httpx.Client
    admin: httpx.Client
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1_000_001))

    @property
    def input(self) -> dict:
        return self.creds["input"]

    def mpid(self) -> int:
        """A fresh MPID, unused by other tests of the module."""
        return next(self._ids)

    def send(self, body: Any, path: str = "/v2/events", **kw: Any) -> httpx.Response:
        return self.events.post(path, json=body, **kw)

    def accept(self, body: Any, path: str = "/v2/events") -> httpx.Response:
        resp = self.send(body, path)
        assert resp.status_code == 202, resp.text
        assert resp.content == b""
        return resp

    def get_profile(self, mpid: int) -> httpx.Response:
        return self.admin.get(f"/api/v1/users/{mpid}")

    def profile(self, mpid: int) -> dict[str, Any]:
        resp = self.get_profile(mpid)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def absent(self, mpid: int) -> bool:
        resp = self.get_profile(mpid)
        assert resp.status_code in (200, 404), resp.text
        return resp.status_code == 404

    def create_input(self, name: str, platform: str = "server") -> dict[str, Any]:
        resp = self.admin.post(
            "/api/v1/inputs",
            json={"workspace": self.creds["workspace"]["id"], "name": name, "platform": platform},
        )
        assert resp.status_code in (200, 201), resp.text
        created = resp.json()
        assert created["key"] and created["secret"]
        return created

    def client_for(self, key: str, secret: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=(key, secret), timeout=30)


@pytest.fixture(scope="module")
def api(server: tuple[Server, dict]) -> Iterator[Api]:
    srv, creds = server
    inp = creds["input"]
    with (
        httpx.Client(base_url=srv.url, auth=(inp["key"], inp["secret"]), timeout=30) as events,
        httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=30
        ) as admin,
    ):
        yield Api(srv, creds, events, admin)
