"""The management API (SPEC §7, §7.2) against a real `milepost serve` process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.server import Server, running_server

pytestmark = pytest.mark.api

DEFAULT_SETTINGS = {
    "audience_limit": 20,
    "activated": 0,
    "available": 20,
    "lookback_days": 90,
    "profile_lifetime_days": 90,
    "retention_days": 400,
}
PLATFORMS = ["ios", "android", "web", "server", "feed"]


@pytest.fixture(scope="module")
def api(server: tuple[Server, dict]) -> Iterator[httpx.Client]:
    srv, creds = server
    with httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def url(server: tuple[Server, dict]) -> str:
    return server[0].url


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def _batch(mpid: int, **extra: object) -> dict:
    return {
        "mpid": mpid,
        "source_request_id": _unique("req"),
        "events": [
            {"event_type": "custom_event", "data": {"event_name": "probe", "custom_event_type": "other"}},
        ],
        **extra,
    }


def _send(url: str, key: str, secret: str, batches: list[dict] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v2/bulkevents", json=batches or [_batch(77)], auth=(key, secret), timeout=30)


def _new_input(api: httpx.Client, workspace: str | int = "Default", platform: str = "web") -> dict:
    resp = api.post(
        "/api/v1/inputs", json={"workspace": workspace, "name": _unique("in"), "platform": platform}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


# ---- public endpoints and authentication ------------------------------------------------------


def test_public_endpoints_need_no_token(url: str) -> None:
    resp = httpx.get(f"{url}/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/workspaces" in spec["paths"]
    assert "/api/v1/inputs" in spec["paths"]
    assert "/api/v1/settings" in spec["paths"]
    assert "/v2/bulkevents" in spec["paths"]

    resp = httpx.get(f"{url}/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"

    resp = httpx.get(f"{url}/readyz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ready"


MANAGEMENT_CALLS = [
    ("GET", "/api/v1/workspaces"),
    ("POST", "/api/v1/workspaces"),
    ("GET", "/api/v1/workspaces/1"),
    ("PATCH", "/api/v1/workspaces/1"),
    ("DELETE", "/api/v1/workspaces/1"),
    ("GET", "/api/v1/inputs"),
    ("POST", "/api/v1/inputs"),
    ("GET", "/api/v1/inputs/1"),
    ("PATCH", "/api/v1/inputs/1"),
    ("DELETE", "/api/v1/inputs/1"),
    ("POST", "/api/v1/inputs/1/rotate-secret"),
    ("POST", "/api/v1/inputs/1/batches"),
    ("GET", "/api/v1/settings"),
    ("PATCH", "/api/v1/settings"),
    ("GET", "/api/v1/users/1"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT_CALLS)
def test_management_api_needs_a_bearer_token(url: str, method: str, path: str) -> None:
    body = b'{"name": "never-created"}' if method in ("POST", "PATCH") else None
    headers = {"Content-Type": "application/json"}

    resp = httpx.request(method, f"{url}{path}", content=body, headers=headers)
    error = _assert_error(resp, 401)
    assert error["code"] == "UNAUTHORIZED"
    assert resp.headers.get("www-authenticate", "").lower().startswith("bearer")

    resp = httpx.request(
        method, f"{url}{path}", content=body, headers={**headers, "Authorization": "Basic abc"}
    )
    _assert_error(resp, 401)

    for wrong in ("not-a-token", "mp_" + "x" * 43):
        resp = httpx.request(
            method, f"{url}{path}", content=body, headers={**headers, "Authorization": f"Bearer {wrong}"}
        )
        error = _assert_error(resp, 403)
        assert error["code"] == "FORBIDDEN"


def test_nothing_changed_by_unauthorised_calls(api: httpx.Client) -> None:
    names = [w["name"] for w in api.get("/api/v1/workspaces").json()["workspaces"]]
    assert "never-created" not in names
    assert api.get("/api/v1/inputs/1").status_code == 200


def test_unknown_route_is_a_json_404(api: httpx.Client) -> None:
    _assert_error(api.get("/api/v1/no-such-thing"), 404)


# ---- workspaces -------------------------------------------------------------------------------


def test_workspace_crud(api: httpx.Client) -> None:
    name = _unique("Marketing")
    resp = api.post("/api/v1/workspaces", json={"name": name})
    assert resp.status_code == 201, resp.text
    ws = resp.json()
    assert ws["name"] == name and isinstance(ws["id"], int)

    got = api.get(f"/api/v1/workspaces/{ws['id']}")
    assert got.status_code == 200
    assert got.json()["name"] == name

    listed = api.get("/api/v1/workspaces").json()["workspaces"]
    assert next(w for w in listed if w["id"] == ws["id"])["inputs"] == []
    assert any(w["name"] == "Default" for w in listed)

    # Names are unique, whatever the case or surrounding spaces.
    for dup in (name, name.upper(), f"  {name} "):
        error = _assert_error(api.post("/api/v1/workspaces", json={"name": dup}), 409)
        assert error["code"] == "CONFLICT"
    _assert_error(api.patch(f"/api/v1/workspaces/{ws['id']}", json={"name": "Default"}), 409)

    renamed = _unique("Growth")
    resp = api.patch(f"/api/v1/workspaces/{ws['id']}", json={"name": renamed})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == renamed
    assert api.get(f"/api/v1/workspaces/{ws['id']}").json()["name"] == renamed

    # A workspace with inputs cannot be deleted; the message names them.
    inp = _new_input(api, ws["id"])
    error = _assert_error(api.delete(f"/api/v1/workspaces/{ws['id']}"), 409)
    assert inp["name"] in error["message"]
    assert api.delete(f"/api/v1/inputs/{inp['id']}").status_code == 204

    resp = api.delete(f"/api/v1/workspaces/{ws['id']}")
    assert resp.status_code == 204
    assert resp.content == b""
    _assert_error(api.get(f"/api/v1/workspaces/{ws['id']}"), 404)
    _assert_error(api.delete(f"/api/v1/workspaces/{ws['id']}"), 404)


def test_default_workspace_with_its_input_cannot_be_deleted(
    api: httpx.Client, server: tuple[Server, dict]
) -> None:
    ws_id = server[1]["workspace"]["id"]
    error = _assert_error(api.delete(f"/api/v1/workspaces/{ws_id}"), 409)
    assert "web" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/workspaces/999999", None),
        ("PATCH", "/api/v1/workspaces/999999", {"name": "x"}),
        ("DELETE", "/api/v1/workspaces/999999", None),
        ("GET", "/api/v1/workspaces/99999999999999999999999", None),
        ("GET", "/api/v1/inputs/999999", None),
        ("PATCH", "/api/v1/inputs/999999", {"enabled": False}),
        ("DELETE", "/api/v1/inputs/999999", None),
        ("POST", "/api/v1/inputs/999999/rotate-secret", None),
        ("GET", "/api/v1/users/424242424242", None),
        ("GET", "/api/v1/users/99999999999999999999999", None),
    ],
)
def test_unknown_resources_are_404(api: httpx.Client, method: str, path: str, body: dict | None) -> None:
    error = _assert_error(api.request(method, path, json=body), 404)
    assert error["code"] == "NOT_FOUND"


def test_input_in_unknown_workspace_is_404(api: httpx.Client) -> None:
    for ws in ("No such workspace", 999999):
        _assert_error(
            api.post("/api/v1/inputs", json={"workspace": ws, "name": _unique("x"), "platform": "web"}), 404
        )


# ---- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_create_input_shows_the_secret_once(api: httpx.Client, url: str, platform: str) -> None:
    name = _unique(f"{platform}-app")
    resp = api.post("/api/v1/inputs", json={"workspace": "Default", "name": name, "platform": platform})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["name"] == name
    assert created["platform"] == platform
    assert created["enabled"] is True
    assert created["workspace"]["name"] == "Default"
    assert isinstance(created["key"], str) and created["key"]
    assert isinstance(created["secret"], str) and created["secret"]

    got = api.get(f"/api/v1/inputs/{created['id']}").json()
    assert "secret" not in got
    assert got["key"] == created["key"]
    listed = [i for i in api.get("/api/v1/inputs").json()["inputs"] if i["id"] == created["id"]]
    assert len(listed) == 1 and "secret" not in listed[0]
    assert created["secret"] not in api.get("/api/v1/workspaces").text
    assert created["secret"] not in api.get("/api/v1/inputs").text

    assert _send(url, created["key"], created["secret"]).status_code == 202


def test_input_by_workspace_name_or_id(api: httpx.Client, server: tuple[Server, dict]) -> None:
    ws_id = server[1]["workspace"]["id"]
    assert _new_input(api, ws_id)["workspace"]["id"] == ws_id
    assert _new_input(api, "Default")["workspace"]["id"] == ws_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workspace": "Default", "name": "tv-app", "platform": "tv"}, "platform"),
        ({"workspace": "Default", "name": "tv-app", "platform": ""}, "platform"),
        ({"workspace": "Default", "name": "tv-app", "platform": 3}, "platform"),
        ({"workspace": "Default", "name": "tv-app"}, "platform"),
        ({"workspace": "Default", "platform": "web"}, "name"),
        ({"workspace": "Default", "name": "", "platform": "web"}, "name"),
        ({"workspace": "Default", "name": "x" * 101, "platform": "web"}, "name"),
        ({"workspace": "Default", "name": 12, "platform": "web"}, "name"),
        ({"name": "tv-app", "platform": "web"}, "workspace"),
        ({"workspace": None, "name": "tv-app", "platform": "web"}, "workspace"),
        ({"workspace": "Default", "name": "tv-app", "platform": "web", "colour": "red"}, "colour"),
    ],
)
def test_input_fields_are_validated(api: httpx.Client, body: dict, field: str) -> None:
    error = _assert_error(api.post("/api/v1/inputs", json=body), 400)
    assert error["code"] == "BAD_REQUEST"
    assert field in error["message"]


def test_input_names_are_unique_in_the_account(api: httpx.Client) -> None:
    ws = api.post("/api/v1/workspaces", json={"name": _unique("Other")}).json()
    error = _assert_error(
        api.post("/api/v1/inputs", json={"workspace": ws["id"], "name": "WEB", "platform": "ios"}), 409
    )
    assert "WEB" in error["message"]


def test_rename_input(api: httpx.Client, url: str) -> None:
    inp = _new_input(api)
    new_name = _unique("renamed")
    resp = api.patch(f"/api/v1/inputs/{inp['id']}", json={"name": new_name})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == new_name
    assert "secret" not in resp.json()
    assert api.get(f"/api/v1/inputs/{inp['id']}").json()["name"] == new_name
    _assert_error(api.patch(f"/api/v1/inputs/{inp['id']}", json={"name": "web"}), 409)
    _assert_error(api.patch(f"/api/v1/inputs/{inp['id']}", json={"name": ""}), 400)
    # Renaming keeps the credentials.
    assert _send(url, inp["key"], inp["secret"]).status_code == 202


def test_disable_and_enable_input(api: httpx.Client, url: str) -> None:
    inp = _new_input(api)
    assert _send(url, inp["key"], inp["secret"]).status_code == 202

    resp = api.patch(f"/api/v1/inputs/{inp['id']}", json={"enabled": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["enabled"] is False
    assert api.get(f"/api/v1/inputs/{inp['id']}").json()["enabled"] is False
    refused = _send(url, inp["key"], inp["secret"])
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "FORBIDDEN"
    single = httpx.post(f"{url}/v2/events", json=_batch(78), auth=(inp["key"], inp["secret"]))
    assert single.status_code == 403

    resp = api.patch(f"/api/v1/inputs/{inp['id']}", json={"enabled": True})
    assert resp.status_code == 200
    assert resp.json()["enabled"] is True
    assert _send(url, inp["key"], inp["secret"]).status_code == 202


def test_rotate_secret(api: httpx.Client, url: str) -> None:
    inp = _new_input(api)
    old = inp["secret"]
    assert _send(url, inp["key"], old).status_code == 202

    resp = api.post(f"/api/v1/inputs/{inp['id']}/rotate-secret")
    assert resp.status_code == 200, resp.text
    rotated = resp.json()
    assert rotated["key"] == inp["key"]
    new = rotated["secret"]
    assert new and new != old
    assert "secret" not in api.get(f"/api/v1/inputs/{inp['id']}").json()

    assert _send(url, inp["key"], old).status_code == 403
    assert _send(url, inp["key"], new).status_code == 202


def test_delete_input(api: httpx.Client, url: str) -> None:
    inp = _new_input(api)
    assert _send(url, inp["key"], inp["secret"]).status_code == 202
    resp = api.delete(f"/api/v1/inputs/{inp['id']}")
    assert resp.status_code == 204
    assert resp.content == b""
    _assert_error(api.get(f"/api/v1/inputs/{inp['id']}"), 404)
    assert all(i["id"] != inp["id"] for i in api.get("/api/v1/inputs").json()["inputs"])
    assert _send(url, inp["key"], inp["secret"]).status_code == 403
    # Its name is free again.
    again = api.post("/api/v1/inputs", json={"workspace": "Default", "name": inp["name"], "platform": "web"})
    assert again.status_code == 201, again.text


# ---- settings ---------------------------------------------------------------------------------


def test_settings_defaults_and_validation(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "data") as (srv, creds),
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}) as api,
    ):
        resp = api.get("/api/v1/settings")
        assert resp.status_code == 200
        assert resp.json() == DEFAULT_SETTINGS

        resp = api.patch("/api/v1/settings", json={"audience_limit": 30, "lookback_days": 60})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {
            **DEFAULT_SETTINGS,
            "audience_limit": 30,
            "available": 30,
            "lookback_days": 60,
            "profile_lifetime_days": 60,  # follows lookback until set
        }
        resp = api.patch("/api/v1/settings", json={"profile_lifetime_days": 120, "retention_days": 200})
        assert resp.status_code == 200, resp.text
        assert resp.json()["profile_lifetime_days"] == 120
        assert resp.json()["retention_days"] == 200
        current = api.get("/api/v1/settings").json()
        assert current == resp.json()

        # Retention below the lookback is refused, naming the field, and changes nothing.
        error = _assert_error(api.patch("/api/v1/settings", json={"retention_days": 30}), 400)
        assert "retention_days" in error["message"]
        error = _assert_error(api.patch("/api/v1/settings", json={"lookback_days": 300}), 400)
        assert "lookback_days" in error["message"]
        error = _assert_error(api.patch("/api/v1/settings", json={"foo": 1}), 400)
        assert "foo" in error["message"]
        error = _assert_error(api.patch("/api/v1/settings", json={"activated": 3}), 400)
        assert "activated" in error["message"]
        for field, value in [
            ("audience_limit", -1),
            ("audience_limit", 10**30),
            ("lookback_days", 0),
            ("retention_days", 0),
            ("profile_lifetime_days", 0),
            ("lookback_days", None),
            ("lookback_days", 2.5),
            ("lookback_days", "ninety"),
            ("retention_days", [400]),
        ]:
            error = _assert_error(api.patch("/api/v1/settings", json={field: value}), 400)
            assert field in error["message"], (field, value, error)
        assert api.get("/api/v1/settings").json() == current

        # Both moved in one request is fine.
        resp = api.patch("/api/v1/settings", json={"lookback_days": 300, "retention_days": 300})
        assert resp.status_code == 200, resp.text
        assert resp.json()["lookback_days"] == 300


# ---- users ------------------------------------------------------------------------------------


def test_user_profile_after_a_batch(api: httpx.Client, url: str, server: tuple[Server, dict]) -> None:
    creds = server[1]
    mpid = 5_550_001
    _assert_error(api.get(f"/api/v1/users/{mpid}"), 404)
    batch = {
        "mpid": mpid,
        "source_request_id": _unique("req"),
        "user_identities": {"customerid": "cust-42", "email": "ada@example.com"},
        "user_attributes": {"plan": "gold", "age": 37, "vip": True, "tags": ["a", "b"]},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "signup",
                    "custom_event_type": "navigation",
                    "timestamp_unixtime_ms": 1_700_000_000_000,
                    "custom_attributes": {"step": "done"},
                },
            },
            {
                "event_type": "screen_view",
                "data": {"screen_name": "Home", "timestamp_unixtime_ms": 1_700_000_001_000},
            },
        ],
    }
    resp = _send(url, creds["input"]["key"], creds["input"]["secret"], [batch])
    assert resp.status_code == 202, resp.text
    assert resp.content == b""

    resp = api.get(f"/api/v1/users/{mpid}")
    assert resp.status_code == 200, resp.text
    profile = resp.json()
    assert profile["mpid"] == mpid
    assert profile["attributes"] == {"plan": "gold", "age": 37, "vip": True, "tags": ["a", "b"]}
    assert profile["identities"]["customer_id"] == "cust-42"
    assert "customerid" not in profile["identities"]
    assert profile["identities"]["email"].lower() == "ada@example.com"
    assert profile["inputs"] == [{"id": creds["input"]["id"], "name": "web"}]
    assert profile["first_seen"] is not None
    assert profile["first_seen"] == profile["last_seen"]
    assert profile["event_counts"]["realtime"] == 2
    recent = profile["recent_events"]
    assert [e["event_type"] for e in recent] == ["screen_view", "custom_event"]
    assert recent[1]["name"] == "signup"
    assert recent[1]["timestamp_unixtime_ms"] == 1_700_000_000_000
    assert recent[1]["input"] == "web"
    assert recent[1]["data"]["custom_attributes"] == {"step": "done"}

    # The same request id again is acknowledged and dropped: nothing changes.
    assert _send(url, creds["input"]["key"], creds["input"]["secret"], [batch]).status_code == 202
    assert api.get(f"/api/v1/users/{mpid}").json()["event_counts"]["realtime"] == 2

    # A second batch: attributes merge, null deletes, last_seen moves on.
    second = {"mpid": mpid, "user_attributes": {"plan": None, "city": "Oslo"}}
    assert _send(url, creds["input"]["key"], creds["input"]["secret"], [second]).status_code == 202
    after = api.get(f"/api/v1/users/{mpid}").json()
    assert after["attributes"] == {"age": 37, "vip": True, "tags": ["a", "b"], "city": "Oslo"}
    assert after["last_seen"] >= profile["last_seen"]
    assert after["first_seen"] == profile["first_seen"]


def test_user_path_must_be_a_number(api: httpx.Client) -> None:
    error = _assert_error(api.get("/api/v1/users/abc"), 400)
    assert "mpid" in error["message"]


# ---- metrics ----------------------------------------------------------------------------------


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_ingest(url: str, server: tuple[Server, dict]) -> None:
    creds = server[1]
    input_id = creds["input"]["id"]
    accepted = f'input="{input_id}",endpoint="bulkevents"'
    before = httpx.get(f"{url}/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")

    batches = [_batch(900 + i) for i in range(3)]
    assert _send(url, creds["input"]["key"], creds["input"]["secret"], batches).status_code == 202
    bad = httpx.post(
        f"{url}/v2/bulkevents", content=b"[{", auth=(creds["input"]["key"], creds["input"]["secret"])
    )
    assert bad.status_code == 400
    assert httpx.post(f"{url}/v2/bulkevents", json=[], auth=("nope", "nope")).status_code == 403

    after = httpx.get(f"{url}/metrics").text
    assert "# TYPE milepost_ingest_batches_accepted_total counter" in after
    assert "# TYPE milepost_ingest_requests_rejected_total counter" in after
    assert _metric(after, "milepost_ingest_batches_accepted_total", accepted) == pytest.approx(
        _metric(before.text, "milepost_ingest_batches_accepted_total", accepted) + 3
    )
    assert _metric(after, "milepost_ingest_requests_rejected_total", 'reason="BAD_REQUEST"') >= 1
    assert _metric(after, "milepost_ingest_requests_rejected_total", 'reason="FORBIDDEN"') >= 1
    assert re.search(r"^milepost_writer_commits_total \d+$", after, re.MULTILINE)
    assert re.search(r"^milepost_users \d+$", after, re.MULTILINE)
    assert re.search(r"^milepost_store_bytes \d+$", after, re.MULTILINE)


# ---- never a 500 ------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}

MALFORMED = [
    ("POST", "/api/v1/workspaces", b"{bad"),
    ("POST", "/api/v1/workspaces", b""),
    ("POST", "/api/v1/workspaces", b"null"),
    ("POST", "/api/v1/workspaces", b"[]"),
    ("POST", "/api/v1/workspaces", b'"Sales"'),
    ("POST", "/api/v1/workspaces", b"\xff\xfe\x00"),
    ("POST", "/api/v1/workspaces", b'{"name": 5}'),
    ("POST", "/api/v1/workspaces", b'{"name": null}'),
    ("POST", "/api/v1/workspaces", b'{"name": ["a"]}'),
    ("POST", "/api/v1/workspaces", b'{"name": "   "}'),
    ("POST", "/api/v1/workspaces", b'{"name": "a\\u0000b"}'),
    ("POST", "/api/v1/workspaces", b'{"name": "line\\nbreak"}'),
    ("PATCH", "/api/v1/workspaces/1", b"{bad"),
    ("PATCH", "/api/v1/workspaces/1", b'{"name": {}}'),
    ("GET", "/api/v1/workspaces/abc", None),
    ("GET", "/api/v1/workspaces/1.5", None),
    ("POST", "/api/v1/inputs", b"{bad"),
    ("POST", "/api/v1/inputs", b"[1, 2]"),
    ("POST", "/api/v1/inputs", b'{"workspace": 1.5, "name": "x", "platform": "web"}'),
    ("POST", "/api/v1/inputs", b'{"workspace": [1], "name": "x", "platform": "web"}'),
    ("POST", "/api/v1/inputs", b'{"workspace": {"id": 1}, "name": "x", "platform": "web"}'),
    ("POST", "/api/v1/inputs", b'{"workspace": "Default", "name": "x", "platform": ["web"]}'),
    ("PATCH", "/api/v1/inputs/1", b"{bad"),
    ("PATCH", "/api/v1/inputs/1", b'{"enabled": "maybe"}'),
    ("PATCH", "/api/v1/inputs/1", b'{"enabled": null, "name": 3}'),
    ("PATCH", "/api/v1/inputs/1", b'{"key": "abc"}'),
    ("PATCH", "/api/v1/inputs/1", b'{"secret": "abc"}'),
    ("GET", "/api/v1/inputs/web", None),
    ("POST", "/api/v1/inputs/1/batches", b"{bad"),
    ("POST", "/api/v1/inputs/1/batches", b'[{"mpid": 0}]'),
    ("POST", "/api/v1/inputs/1/batches", b'[{"mpid": "abc"}]'),
    ("PATCH", "/api/v1/settings", b"{bad"),
    ("PATCH", "/api/v1/settings", b"[]"),
    ("PATCH", "/api/v1/settings", b'{"audience_limit": "many"}'),
    ("PATCH", "/api/v1/settings", b'{"audience_limit": {"n": 1}}'),
    ("PATCH", "/api/v1/settings", b'{"retention_days": 1e400}'),
    ("PATCH", "/api/v1/settings", b'{"request_dedupe_days": 5}'),
    ("GET", "/api/v1/users/abc", None),
    ("GET", "/api/v1/users/1e5", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MALFORMED)
def test_malformed_management_requests_are_400(
    api: httpx.Client, method: str, path: str, body: bytes | None
) -> None:
    resp = api.request(method, path, content=body, headers=JSON)
    _assert_error(resp, 400)


WRONG_TYPES = [
    ("PATCH", "/api/v1/settings", {"audience_limit": True}),
    ("PATCH", "/api/v1/settings", {"audience_limit": "25"}),
    ("PATCH", "/api/v1/settings", {"lookback_days": False}),
    ("PATCH", "/api/v1/inputs/1", {"enabled": "yes"}),
    ("PATCH", "/api/v1/inputs/1", {"enabled": 0}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRONG_TYPES)
def test_wrong_json_types_are_refused_not_coerced(
    api: httpx.Client, method: str, path: str, body: dict
) -> None:
    """A boolean is not a number and a string is not a boolean: the catalog's own rules say so
    ("must be a whole number", "must be true or false"), and the API must not coerce around them."""
    before_settings = api.get("/api/v1/settings").json()
    before_input = api.get("/api/v1/inputs/1").json()
    try:
        resp = api.request(method, path, json=body)
        error = _assert_error(resp, 400)
        assert next(iter(body)) in error["message"]
    finally:
        # Put back whatever a coercion may have changed, so the other tests see the defaults.
        restore = {k: before_settings[k] for k in ("audience_limit", "lookback_days", "retention_days")}
        api.patch("/api/v1/settings", json=restore)
        api.patch("/api/v1/inputs/1", json={"enabled": before_input["enabled"]})


def test_server_still_healthy_after_all_that(url: str) -> None:
    assert httpx.get(f"{url}/readyz").status_code == 200
