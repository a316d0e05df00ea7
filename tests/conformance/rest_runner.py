"""REST helpers for tests against a real `milepost serve` process, and a conformance case runner
that drives one case entirely through the public HTTP APIs (management API + Events API).

`Rest` wraps the management API with small assertions on the documented shapes (SPEC §7.2);
`RestCaseRunner` plays a case of shared/conformance/cases.yaml against a server started with
MILEPOST_FAKE_CLOCK, moving its clock with POST /api/v1/test/clock.
"""

from __future__ import annotations

import itertools
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from tests.support.server import Server, init_data_dir

# ---- the management API ----------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> str:
    """Assert the documented error shape `{"error": {code, message}}`; return the message."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


class Rest:
    """The management API with the admin token, and the Events API with an input's key and secret."""

    _mpids = itertools.count(7_000_001)

    def __init__(self, server: Server, creds: dict[str, Any]) -> None:
        self.server = server
        self.creds = creds
        self.admin = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=60
        )
        self._event_clients: dict[str, httpx.Client] = {}

    def close(self) -> None:
        self.admin.close()
        for c in self._event_clients.values():
            c.close()

    @classmethod
    def mpid(cls) -> int:
        """A fresh MPID, not used by any other test of the session."""
        return next(cls._mpids)

    # -- plain calls

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        resp = self.admin.request(method, path, **kw)
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text)
        return resp

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        resp = self.call(method, path, **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def refused(
        self, method: str, path: str, status: int | tuple[int, ...], code: str | None = None, **kw: Any
    ) -> str:
        return assert_error(self.call(method, path, **kw), status, code)

    # -- resources

    def workspace(self, name: str | None = None) -> dict[str, Any]:
        return self.ok("POST", "/api/v1/workspaces", 201, json={"name": name or unique("ws")})

    def input(
        self, workspace: int | str | None = None, name: str | None = None, platform: str = "web"
    ) -> dict:
        ws = self.creds["workspace"]["id"] if workspace is None else workspace
        created = self.ok(
            "POST",
            "/api/v1/inputs",
            201,
            json={"workspace": ws, "name": name or unique("in"), "platform": platform},
        )
        assert created["key"] and created["secret"]
        return created

    def journey(
        self, milestones: list[dict] | None = None, inputs: list | None = None, name: str | None = None
    ) -> dict:
        body: dict[str, Any] = {"name": name or unique("journey"), "milestones": milestones or []}
        if inputs is not None:
            body["inputs"] = inputs
        return self.ok("POST", "/api/v1/journeys", 201, json=body)

    def document(self, journey_id: int) -> dict[str, Any]:
        return self.ok("GET", f"/api/v1/journeys/{journey_id}")

    def milestone(
        self,
        journey_id: int,
        name: str,
        criteria: dict | None = None,
        parent_id: int | None = None,
        position: int | None = None,
        remaining: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"parent_id": parent_id, "name": name}
        if remaining:
            body["remaining"] = True
        else:
            body["criteria"] = criteria if criteria is not None else {"all": []}
        if position is not None:
            body["position"] = position
        return self.ok("POST", f"/api/v1/journeys/{journey_id}/milestones", 201, json=body)

    def audience(self, audience_id: int) -> dict[str, Any]:
        return self.ok("GET", f"/api/v1/audiences/{audience_id}")

    def output(self, directory: Path | str, name: str | None = None) -> dict[str, Any]:
        return self.ok(
            "POST",
            "/api/v1/outputs",
            201,
            json={"type": "file", "name": name or unique("out"), "settings": {"directory": str(directory)}},
        )

    def connect(self, audience_id: int, output_id: int, status: str = "active") -> dict[str, Any]:
        return self.ok(
            "POST",
            f"/api/v1/audiences/{audience_id}/connections",
            201,
            json={"output_id": output_id, "status": status},
        )

    def settings(self) -> dict[str, Any]:
        return self.ok("GET", "/api/v1/settings")

    def members(self, audience_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Every member, following cursors; checks the page shape on the way."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            params: dict[str, Any] = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            page = self.ok("GET", f"/api/v1/audiences/{audience_id}/members", params=params)
            assert set(page) == {"members", "next_cursor"}, page
            out.extend(page["members"])
            cursor = page["next_cursor"]
            if cursor is None:
                return out
        raise AssertionError("members never reached the last page")

    def mpids(self, audience_id: int) -> list[int]:
        return sorted(m["mpid"] for m in self.members(audience_id))

    def wait_settled(self, audience_id: int, timeout: float = 20.0) -> dict[str, Any]:
        """Poll the audience until its size is no longer `calculating` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            aud = self.audience(audience_id)
            if aud["size"]["kind"] != "calculating":
                return aud
            assert time.monotonic() < deadline, f"audience {audience_id} still calculating: {aud}"
            time.sleep(0.05)

    def wait_connection(
        self, connection_id: int, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the connection until `check` holds (bounded); return it."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.ok("GET", f"/api/v1/connections/{connection_id}")
            if check(c):
                return c
            assert time.monotonic() < deadline, c
            time.sleep(0.05)

    def wait_members(self, audience_id: int, expected: list[int], timeout: float = 5.0) -> list[int]:
        """Poll until the audience's members are `expected` (bounded); return what was last seen."""
        deadline = time.monotonic() + timeout
        want = sorted(expected)
        while True:
            got = self.mpids(audience_id)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    # -- the Events API

    def events_client(self, key: str, secret: str) -> httpx.Client:
        if key not in self._event_clients:
            self._event_clients[key] = httpx.Client(base_url=self.server.url, auth=(key, secret), timeout=60)
        return self._event_clients[key]

    def send(
        self,
        inp: dict[str, Any],
        mpid: int,
        attributes: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
        identities: dict[str, str] | None = None,
    ) -> None:
        batch: dict[str, Any] = {
            "mpid": mpid,
            "environment": "production",
            "events": events
            if events is not None
            else [
                {"event_type": "custom_event", "data": {"event_name": "ping", "custom_event_type": "other"}}
            ],
        }
        if attributes:
            batch["user_attributes"] = attributes
        if identities:
            batch["user_identities"] = identities
        resp = self.events_client(inp["key"], inp["secret"]).post("/v2/events", json=batch)
        assert resp.status_code == 202, resp.text


# ---- conformance cases through REST -----------------------------------------------------------------

DEFAULT_INPUTS = [{"name": "web", "workspace": "main", "platform": "web"}]


def at_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class RestCaseRunner:
    """One case against one server process with a manual clock; every audience is activated."""

    def __init__(
        self, case: dict[str, Any], data_dir: Path, template: tuple[Path, dict[str, Any]] | None = None
    ) -> None:
        """`template`: a data directory fresh from `milepost init` and its credentials, copied
        instead of running `init` again (it is the slow part of a case)."""
        self.case = case
        self.data_dir = data_dir
        self.template = template
        self.start_ms = at_ms(case["steps"][0]["at"])
        self.server: Server | None = None
        self.rest: Rest | None = None
        self.inputs: dict[str, dict[str, Any]] = {}
        self.audiences: dict[str, int] = {}
        self.milestones: dict[str, int] = {}

    def __enter__(self) -> RestCaseRunner:
        from tests.support.server import free_port

        env = {"MILEPOST_FAKE_CLOCK": str(self.start_ms)}
        if self.template is not None:
            shutil.copytree(self.template[0], self.data_dir)
            creds = self.template[1]
        else:
            creds = init_data_dir(self.data_dir, env)
        self.server = Server(self.data_dir, free_port(), env)
        self.server.start(timeout=120)  # generous: a loaded machine starts Python slowly
        self.rest = Rest(self.server, creds)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rest is not None:
            self.rest.close()
        if self.server is not None:
            self.server.stop()

    # -- setup

    def setup(self) -> None:
        rest = self.rest
        assert rest is not None
        setup = self.case.get("setup") or {}
        # `init` made an input of its own (named "web", like the cases' default one): remove it, so
        # the case's inputs are exactly the account's.
        rest.ok("DELETE", f"/api/v1/inputs/{rest.creds['input']['id']}", 204)
        workspaces = {w["name"]: w["id"] for w in rest.ok("GET", "/api/v1/workspaces")["workspaces"]}
        for spec in setup.get("inputs") or DEFAULT_INPUTS:
            if spec["workspace"] not in workspaces:
                workspaces[spec["workspace"]] = rest.workspace(spec["workspace"])["id"]
            self.inputs[spec["name"]] = rest.input(
                workspaces[spec["workspace"]], spec["name"], spec.get("platform", "web")
            )
        if setup.get("settings"):
            rest.ok("PATCH", "/api/v1/settings", json=setup["settings"])
        for definition in setup.get("calculated_attributes") or []:
            rest.ok("POST", "/api/v1/calculated-attributes", 201, json=definition)
        for journey in self.case["journeys"]:
            doc = rest.ok("POST", "/api/v1/journeys", 201, json=journey)
            self._collect(doc["milestones"])
        # Every audience is maintained in real time: activate each one.
        rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": max(20, len(self.audiences))})
        output = rest.output(self.data_dir.parent / "file-output", "conformance")
        for audience_id in self.audiences.values():
            rest.connect(audience_id, output["id"])
        self.clock(self.start_ms)
        for audience_id in self.audiences.values():
            rest.wait_settled(audience_id)

    def _collect(self, milestones: list[dict[str, Any]]) -> None:
        for m in milestones:
            self.audiences[m["name"]] = m["audience"]["id"]
            self.milestones[m["name"]] = m["id"]
            self._collect(m.get("children") or [])

    # -- steps

    def clock(self, now_ms: int) -> None:
        assert self.rest is not None
        answer = self.rest.ok("POST", "/api/v1/test/clock", json={"now_ms": now_ms})
        assert answer["now_ms"] == now_ms, answer

    def run(self) -> None:
        self.setup()
        rest = self.rest
        assert rest is not None
        for i, step in enumerate(self.case["steps"]):
            now = at_ms(step["at"])
            self.clock(now)  # timers due by now fire
            for item in step.get("ingest") or []:
                self._ingest(item)
            if "edit" in step:
                edit = step["edit"]
                rest.ok(
                    "PATCH",
                    f"/api/v1/milestones/{self.milestones[edit['milestone']]}",
                    json={"criteria": edit["criteria"]},
                )
            if "reorder" in step:
                for position, name in enumerate(step["reorder"]["order"]):
                    rest.ok(
                        "PATCH", f"/api/v1/milestones/{self.milestones[name]}", json={"position": position}
                    )
            self.clock(now)  # every accepted batch is committed and evaluated
            if "expect" in step:
                for name, audience_id in self.audiences.items():
                    rest.wait_settled(audience_id)
                    if name in step["expect"]:
                        self._check(i, step["at"], name, audience_id, step["expect"][name])

    def _ingest(self, item: dict[str, Any]) -> None:
        assert self.rest is not None
        inp = self.inputs[item["input"]]
        client = self.rest.events_client(inp["key"], inp["secret"])
        if item.get("endpoint") == "historical":
            resp = client.post("/v2/bulkevents/historical", json=[item["batch"]])
        else:
            resp = client.post("/v2/events", json=item["batch"])
        assert resp.status_code == 202, f"ingest refused: {resp.status_code} {resp.text}"

    def _check(self, index: int, at: str, name: str, audience_id: int, expected: list[Any]) -> None:
        assert self.rest is not None
        members = self.rest.members(audience_id, limit=2)  # small pages: the cursors are exercised too
        got = sorted(m["mpid"] for m in members)
        assert len(set(got)) == len(got), f"'{name}' lists a member twice: {got}"
        want: list[int] = []
        for e in expected:
            if isinstance(e, int):
                want.append(e)
                continue
            ((id_type, value),) = e.items()
            found = [
                m["mpid"] for m in members if _same_identity(m["identities"].get(id_type), value, id_type)
            ]
            want.append(found[0] if found else -1)  # -1: nobody holds it, so the comparison fails
        assert got == sorted(want), (
            f"step {index} at {at}: '{name}' has {got} "
            f"({[m['identities'] for m in members]}), expected {expected}"
        )


def _same_identity(held: str | None, value: str, id_type: str) -> bool:
    if held is None:
        return False
    if id_type == "email":
        return held.strip().lower() == value.strip().lower()
    return held.strip() == value.strip()
