"""Signing in to the UI: the session cookie, CSRF on changes, sign-out; bearer tokens unchanged."""

from __future__ import annotations

import re

import httpx
from tests.support.server import Server


def _signed_in(server: Server, token: str) -> tuple[httpx.Client, str]:
    """A client holding the session cookie, and the page's CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=30)
    resp = client.post("/signin", data={"token": token, "next": "/settings"})
    assert resp.status_code == 303 and resp.headers["location"] == "/settings", resp.text
    page = client.get("/journeys")
    assert page.status_code == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert csrf, page.text[:500]
    return client, csrf.group(1)


def test_sign_in_sets_an_httponly_lax_cookie_that_authorises_api_reads(server: tuple[Server, dict]) -> None:
    srv, creds = server
    resp = httpx.post(f"{srv.url}/signin", data={"token": creds["admin_token"]})
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("milepost_session=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert creds["admin_token"] not in cookie  # sealed, not the token itself
    client, _ = _signed_in(srv, creds["admin_token"])
    assert client.get("/api/v1/settings").status_code == 200


def test_wrong_token_is_refused_and_pages_redirect_to_sign_in(server: tuple[Server, dict]) -> None:
    srv, _ = server
    resp = httpx.post(f"{srv.url}/signin", data={"token": "mp_not-a-token"})
    assert resp.status_code == 401
    assert "unknown or was revoked" in resp.text
    page = httpx.get(f"{srv.url}/journeys")
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")
    forged = httpx.get(f"{srv.url}/api/v1/settings", cookies={"milepost_session": "forged"})
    assert forged.status_code == 401
    assert forged.json()["error"]["message"]


def test_changes_with_the_cookie_need_the_csrf_header(server: tuple[Server, dict]) -> None:
    srv, creds = server
    client, csrf = _signed_in(srv, creds["admin_token"])
    body = {"name": "csrf-checked"}
    refused = client.post("/api/v1/workspaces", json=body)
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["error"]["message"]
    wrong = client.post("/api/v1/workspaces", json=body, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    ok = client.post("/api/v1/workspaces", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text


def test_bearer_tokens_work_as_before(server: tuple[Server, dict]) -> None:
    srv, creds = server
    assert httpx.get(f"{srv.url}/api/v1/settings").status_code == 401
    bad = httpx.get(f"{srv.url}/api/v1/settings", headers={"Authorization": "Bearer mp_nope"})
    assert bad.status_code == 403
    good = httpx.post(
        f"{srv.url}/api/v1/workspaces",
        json={"name": "bearer-no-csrf"},
        headers={"Authorization": f"Bearer {creds['admin_token']}"},
    )
    assert good.status_code == 201, good.text


def test_sign_out_clears_the_cookie(server: tuple[Server, dict]) -> None:
    srv, creds = server
    client, csrf = _signed_in(srv, creds["admin_token"])
    resp = client.post("/signout", data={"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["location"] == "/signin"
    assert "milepost_session" not in client.cookies
    assert client.get("/journeys").status_code == 303


def test_sign_in_only_returns_to_this_site(server: tuple[Server, dict]) -> None:
    srv, creds = server
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        resp = httpx.post(f"{srv.url}/signin", data={"token": creds["admin_token"], "next": target})
        assert resp.status_code == 303
        assert resp.headers["location"] == "/journeys", target
