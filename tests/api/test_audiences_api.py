"""Audiences, members, activity, user memberships, status transitions and outputs (SPEC §2, §5, §7.2)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.rest_runner import Rest, unique
from tests.support.server import Server

pytestmark = pytest.mark.api

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
SILVER = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "silver"}
BIG = {"type": "user_attribute", "attribute": "n", "op": "greater_than", "value": 2}
EVERYONE: dict[str, Any] = {"all": []}
AUDIENCE_KEYS = {"id", "journey_id", "milestone_id", "name", "external_name", "size", "status", "connections"}


@pytest.fixture(scope="module")
def rest(server: tuple[Server, dict]) -> Iterator[Rest]:
    client = Rest(*server)
    yield client
    client.close()


def _walk(milestones: list[dict]) -> Iterator[dict]:
    for m in milestones:
        yield m
        yield from _walk(m.get("children") or [])


def _audiences(doc: dict) -> dict[str, int]:
    return {m["name"]: m["audience"]["id"] for m in _walk(doc["milestones"])}


def _statuses(rest: Rest, audiences: dict[str, int]) -> dict[str, str]:
    return {name: rest.audience(a)["status"] for name, a in audiences.items()}


def _population(rest: Rest, count: int, identities: bool = True) -> tuple[dict, list[int]]:
    """A fresh input and `count` gold users sent through it (every third one without identities)."""
    inp = rest.input()
    mpids = [rest.mpid() for _ in range(count)]
    for i, mpid in enumerate(mpids):
        ids = {"customer_id": f"c-{mpid}", "email": f"u{mpid}@example.com"} if identities and i % 3 else None
        rest.send(inp, mpid, {"tier": "gold", "n": i}, identities=ids)
    return inp, mpids


# ---- one audience ------------------------------------------------------------------------------------


def test_audience_shape(rest: Rest, tmp_path: Path) -> None:
    inp, _mpids = _population(rest, 3)
    doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    m = doc["milestones"][0]
    aud = rest.audience(m["audience"]["id"])
    assert set(aud) >= AUDIENCE_KEYS, aud
    assert (
        aud["id"] == m["audience"]["id"] and aud["journey_id"] == doc["id"] and aud["milestone_id"] == m["id"]
    )
    assert aud["name"] == "gold" and aud["external_name"] == f"{doc['name']} – gold"
    assert aud["status"] == "estimated" and aud["connections"] == []
    assert aud["size"]["kind"] == "estimate" and aud["size"]["value"] == 3 and aud["size"]["exact"] is True
    assert aud["size"]["low"] <= 3 <= aud["size"]["high"]

    out = rest.output(tmp_path / "out")
    conn = rest.connect(aud["id"], out["id"])
    assert conn["audience_id"] == aud["id"] and conn["output_id"] == out["id"] and conn["status"] == "active"
    settled = rest.wait_settled(aud["id"])
    assert settled["status"] == "activated"
    assert settled["size"] == {"kind": "actual", "value": 3, "exact": True} or (
        settled["size"]["kind"] == "actual" and settled["size"]["value"] == 3
    )
    (c,) = settled["connections"]
    assert c["id"] == conn["id"] and c["output_id"] == out["id"] and c["status"] == "active"
    assert c["health"] in {"ok", "retrying", "faulted"}
    listed = rest.ok("GET", f"/api/v1/audiences/{aud['id']}/connections")["connections"]
    assert [x["id"] for x in listed] == [conn["id"]]
    rest.refused("GET", "/api/v1/audiences/987654321", 404, "NOT_FOUND")
    rest.refused("GET", "/api/v1/audiences/987654321/members", 404, "NOT_FOUND")
    rest.refused("GET", "/api/v1/audiences/987654321/members.csv", 404, "NOT_FOUND")


# ---- members -----------------------------------------------------------------------------------------


def _paged(rest: Rest, audience_id: int, limit: int) -> list[list[dict]]:
    pages: list[list[dict]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = rest.ok("GET", f"/api/v1/audiences/{audience_id}/members", params=params)
        assert set(page) == {"members", "next_cursor"}, page
        pages.append(page["members"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and len(page["members"]) == limit
        assert len(pages) < 100


@pytest.mark.parametrize("calculated", [False, True], ids=["estimated", "activated"])
def test_members_pages_are_complete_and_exact(rest: Rest, tmp_path: Path, calculated: bool) -> None:
    inp, mpids = _population(rest, 23)
    silver = rest.mpid()
    rest.send(inp, silver, {"tier": "silver"})
    doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    aud = doc["milestones"][0]["audience"]["id"]
    if calculated:
        rest.connect(aud, rest.output(tmp_path / "out")["id"])
        assert rest.wait_settled(aud)["size"]["value"] == 23
    pages = _paged(rest, aud, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [m for p in pages for m in p]
    assert [m["mpid"] for m in flat] == sorted(mpids)  # ordered, no duplicates, nobody missing
    for i, mpid in enumerate(mpids):
        member = next(m for m in flat if m["mpid"] == mpid)
        want = {"customer_id": f"c-{mpid}", "email": f"u{mpid}@example.com"} if i % 3 else {}
        assert member["identities"] == want, member
    # one page holding everything; an exact multiple of the limit ends with a null cursor
    everything = rest.ok("GET", f"/api/v1/audiences/{aud}/members", params={"limit": 23})
    assert len(everything["members"]) == 23 and everything["next_cursor"] is None
    default = rest.ok("GET", f"/api/v1/audiences/{aud}/members")
    assert [m["mpid"] for m in default["members"]] == sorted(mpids) and default["next_cursor"] is None
    for bad in (
        {"limit": 0},
        {"limit": -1},
        {"limit": 10_001},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
    ):
        rest.refused("GET", f"/api/v1/audiences/{aud}/members", 400, params=bad)


def test_members_of_an_empty_audience(rest: Rest) -> None:
    inp, _ = _population(rest, 2)
    doc = rest.journey([{"name": "silver", "criteria": SILVER}], inputs=[inp["name"]])
    page = rest.ok("GET", f"/api/v1/audiences/{doc['milestones'][0]['audience']['id']}/members")
    assert page == {"members": [], "next_cursor": None}


@pytest.mark.parametrize("calculated", [False, True], ids=["estimated", "activated"])
def test_members_csv(rest: Rest, tmp_path: Path, calculated: bool) -> None:
    inp, mpids = _population(rest, 6)
    doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    aud = doc["milestones"][0]["audience"]["id"]
    if calculated:
        rest.connect(aud, rest.output(tmp_path / "out")["id"])
        rest.wait_settled(aud)
    resp = rest.call("GET", f"/api/v1/audiences/{aud}/members.csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows[0] == ["mpid", "identity_type", "identity_value"]
    want = []
    for i, mpid in enumerate(mpids):
        if i % 3:
            want += [[str(mpid), "customer_id", f"c-{mpid}"], [str(mpid), "email", f"u{mpid}@example.com"]]
        else:
            want.append([str(mpid), "", ""])
    assert sorted(rows[1:]) == sorted(want)


# ---- activity and profiles ---------------------------------------------------------------------------


def test_activity_of_a_calculated_audience(rest: Rest, tmp_path: Path) -> None:
    inp, mpids = _population(rest, 4, identities=False)
    doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    aud = doc["milestones"][0]["audience"]["id"]
    assert "activity" not in rest.audience(aud)  # not calculated: no activity
    rest.connect(aud, rest.output(tmp_path / "out")["id"])
    first = rest.wait_settled(aud)["activity"]
    assert set(first) == {"adds_24h", "drops_24h", "volatility"}, first
    assert first["adds_24h"] >= 0 and first["drops_24h"] >= 0
    newcomer = rest.mpid()
    rest.send(inp, newcomer, {"tier": "gold"})
    rest.send(inp, mpids[0], {"tier": "silver"})
    want = sorted([*mpids[1:], newcomer])
    assert rest.wait_members(aud, want) == want
    activity = rest.audience(aud)["activity"]
    assert activity["adds_24h"] == first["adds_24h"] + 1, (first, activity)
    assert activity["drops_24h"] == first["drops_24h"] + 1, (first, activity)
    assert activity["volatility"] == pytest.approx(
        (activity["adds_24h"] + activity["drops_24h"]) / len(want), abs=1e-4
    )


def test_user_profile_lists_memberships(rest: Rest, tmp_path: Path) -> None:
    inp, mpids = _population(rest, 3, identities=False)
    doc = rest.journey(
        [{"name": "all", "criteria": EVERYONE, "children": [{"name": "gold", "criteria": GOLD}]}],
        inputs=[inp["name"]],
    )
    aud = _audiences(doc)
    ids = {m["name"]: m["id"] for m in _walk(doc["milestones"])}
    before = int(time.time() * 1000)
    rest.connect(aud["gold"], rest.output(tmp_path / "out")["id"])
    rest.wait_settled(aud["gold"])
    rest.wait_settled(aud["all"])
    profile = rest.ok("GET", f"/api/v1/users/{mpids[0]}")
    mine = {m["audience_id"]: m for m in profile["memberships"] if m["audience_id"] in aud.values()}
    assert set(mine) == {aud["all"], aud["gold"]}, profile["memberships"]
    for name in ("all", "gold"):
        entry = mine[aud[name]]
        assert entry["journey"] == {"id": doc["id"], "name": doc["name"]}
        assert entry["milestone"] == {"id": ids[name], "name": name}
        assert isinstance(entry["since"], int) and entry["since"] <= int(time.time() * 1000) + 1000
        assert entry["since"] >= before - 60_000
    rest.send(inp, mpids[0], {"tier": "silver"})
    deadline = time.monotonic() + 5
    while aud["gold"] in {
        m["audience_id"] for m in rest.ok("GET", f"/api/v1/users/{mpids[0]}")["memberships"]
    }:
        assert time.monotonic() < deadline, "the user never left 'gold'"
        time.sleep(0.1)
    rest.refused("GET", "/api/v1/users/123456789012345", 404)


# ---- status transitions ------------------------------------------------------------------------------


def test_activating_a_leaf_calculates_its_path_and_deactivating_frees_it(rest: Rest, tmp_path: Path) -> None:
    inp, _mpids = _population(rest, 5, identities=False)
    doc = rest.journey(
        [
            {
                "name": "a",
                "criteria": EVERYONE,
                "children": [{"name": "b", "criteria": GOLD, "children": [{"name": "c", "criteria": BIG}]}],
            },
            {"name": "d", "criteria": SILVER},
        ],
        inputs=[inp["name"]],
    )
    aud = _audiences(doc)
    assert set(_statuses(rest, aud).values()) == {"estimated"}
    settings = rest.settings()
    out = rest.output(tmp_path / "out")
    conn = rest.connect(aud["c"], out["id"])
    assert _statuses(rest, aud) == {"a": "calculated", "b": "calculated", "c": "activated", "d": "estimated"}
    assert rest.settings()["activated"] == settings["activated"] + 1
    for name in ("a", "b", "c"):
        size = rest.wait_settled(aud[name])["size"]
        assert size["kind"] == "actual", size
    assert rest.audience(aud["a"])["size"]["value"] == 5
    assert rest.audience(aud["c"])["size"]["value"] == len([i for i in range(5) if i > 2])
    assert rest.audience(aud["d"])["size"]["kind"] == "estimate"
    listed = next(j for j in rest.ok("GET", "/api/v1/journeys")["journeys"] if j["id"] == doc["id"])
    assert listed["activated"] == 1 and listed["audiences"] == 4

    changed = rest.ok("PATCH", f"/api/v1/connections/{conn['id']}", json={"status": "inactive"})
    assert changed["status"] == "inactive" and "sync" in changed.get("warning", ""), changed
    assert set(_statuses(rest, aud).values()) == {"estimated"}
    assert rest.settings()["activated"] == settings["activated"]
    assert rest.audience(aud["c"])["size"]["kind"] == "estimate"

    rest.ok("PATCH", f"/api/v1/connections/{conn['id']}", json={"status": "active"})
    assert _statuses(rest, aud)["c"] == "activated"
    assert rest.wait_settled(aud["c"])["size"]["kind"] == "actual"
    rest.ok("DELETE", f"/api/v1/connections/{conn['id']}", 204)
    assert set(_statuses(rest, aud).values()) == {"estimated"}
    assert rest.settings()["activated"] == settings["activated"]
    rest.refused("GET", f"/api/v1/connections/{conn['id']}", 404)


def test_an_audience_leaf_makes_the_referred_path_calculated(rest: Rest, tmp_path: Path) -> None:
    inp, _ = _population(rest, 4, identities=False)
    base = rest.journey(
        [
            {
                "name": "a",
                "criteria": EVERYONE,
                "children": [{"name": "b", "criteria": GOLD}, {"name": "x", "criteria": SILVER}],
            }
        ],
        inputs=[inp["name"]],
    )
    base_aud = _audiences(base)
    user = rest.journey(
        [{"name": "r", "criteria": {"type": "audience", "audience_id": base_aud["b"], "member": True}}],
        inputs=[inp["name"]],
    )
    r = _audiences(user)["r"]
    rest.connect(r, rest.output(tmp_path / "out")["id"])
    assert rest.audience(r)["status"] == "activated"
    assert _statuses(rest, base_aud) == {"a": "calculated", "b": "calculated", "x": "estimated"}
    assert rest.wait_settled(r)["size"]["value"] == 4
    assert rest.wait_settled(base_aud["b"])["size"] == {"kind": "actual", "value": 4, "exact": True}


def test_a_parent_entry_wait_makes_its_parent_calculated(rest: Rest) -> None:
    inp, _ = _population(rest, 2, identities=False)
    wait = {"type": "parent_entry", "op": "more_than_ago", "value": {"amount": 2, "unit": "days"}}
    doc = rest.journey(
        [{"name": "p", "criteria": GOLD, "children": [{"name": "waited", "criteria": wait}]}],
        inputs=[inp["name"]],
    )
    aud = _audiences(doc)
    assert _statuses(rest, aud) == {"p": "calculated", "waited": "estimated"}
    assert rest.wait_settled(aud["p"])["size"]["kind"] == "actual"


# ---- outputs -----------------------------------------------------------------------------------------


def test_outputs_create_list_delete(rest: Rest, tmp_path: Path) -> None:
    name = unique("File drop")
    out = rest.ok(
        "POST",
        "/api/v1/outputs",
        201,
        json={"type": "file", "name": name, "settings": {"directory": str(tmp_path)}},
    )
    assert {"id", "type", "name"} <= set(out) and out["type"] == "file" and out["name"] == name
    assert "settings" not in out
    hook = rest.ok(
        "POST",
        "/api/v1/outputs",
        201,
        json={
            "type": "webhook",
            "name": unique("hook"),
            "settings": {"url": "https://hooks.example.com/x", "secret": "s3cr3t-value"},
        },
    )
    assert "s3cr3t-value" not in rest.call("GET", f"/api/v1/outputs/{hook['id']}").text
    assert "s3cr3t-value" not in rest.call("GET", "/api/v1/outputs").text
    listed = {o["id"]: o for o in rest.ok("GET", "/api/v1/outputs")["outputs"]}
    assert listed[out["id"]]["name"] == name and hook["id"] in listed
    assert rest.ok("GET", f"/api/v1/outputs/{out['id']}")["name"] == name
    rest.refused("POST", "/api/v1/outputs", 409, json={"type": "file", "name": name.upper(), "settings": {}})
    rest.refused(
        "POST", "/api/v1/outputs", 400, json={"type": "carrier-pigeon", "name": unique("x"), "settings": {}}
    )
    rest.refused("POST", "/api/v1/outputs", 400, json={"type": "file", "name": "", "settings": {}})

    doc = rest.journey([{"name": "m", "criteria": EVERYONE}])
    aud = doc["milestones"][0]["audience"]["id"]
    conn = rest.connect(aud, out["id"], status="inactive")
    msg = rest.refused("DELETE", f"/api/v1/outputs/{out['id']}", 409)
    assert str(aud) in msg and "connection" in msg, msg
    assert rest.ok("GET", f"/api/v1/outputs/{out['id']}")["id"] == out["id"]
    rest.ok("DELETE", f"/api/v1/connections/{conn['id']}", 204)
    rest.ok("DELETE", f"/api/v1/outputs/{out['id']}", 204)
    rest.refused("GET", f"/api/v1/outputs/{out['id']}", 404)
    rest.refused("DELETE", f"/api/v1/outputs/{out['id']}", 404)
    assert out["id"] not in {o["id"] for o in rest.ok("GET", "/api/v1/outputs")["outputs"]}
    rest.refused("POST", f"/api/v1/audiences/{aud}/connections", (400, 404), json={"output_id": out["id"]})
    rest.refused("POST", "/api/v1/audiences/987654321/connections", 404, json={"output_id": hook["id"]})


def test_deleting_a_milestone_deletes_its_connections_and_frees_the_credit(
    rest: Rest, tmp_path: Path
) -> None:
    doc = rest.journey([{"name": "m", "criteria": EVERYONE}])
    aud = doc["milestones"][0]["audience"]["id"]
    out = rest.output(tmp_path / "out")
    before = rest.settings()["activated"]
    conn = rest.connect(aud, out["id"])
    assert rest.settings()["activated"] == before + 1
    rest.ok("DELETE", f"/api/v1/milestones/{doc['milestones'][0]['id']}", 204)
    assert rest.settings()["activated"] == before
    rest.refused("GET", f"/api/v1/connections/{conn['id']}", 404)
    rest.ok("DELETE", f"/api/v1/outputs/{out['id']}", 204)
