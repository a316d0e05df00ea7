"""Journeys and milestones through the management API (SPEC §2, §7.1, §7.2), against a real server.

Every test works on its own input (so a journey's root holds only the users that test sent) and
fresh MPIDs, so tests share the module's server without seeing each other's data. Tests that may
leave a broken journey behind when they fail (reference cycles) use a server of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conformance.rest_runner import Rest, unique
from tests.support.server import Server, running_server

pytestmark = pytest.mark.api

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
SILVER = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "silver"}
BIG = {"type": "user_attribute", "attribute": "n", "op": "greater_than", "value": 2}
EVERYONE: dict[str, Any] = {"all": []}
AUDIENCE_KEYS = {"id", "external_name", "size", "status", "connections"}


@pytest.fixture(scope="module")
def rest(server: tuple[Server, dict]) -> Iterator[Rest]:
    client = Rest(*server)
    yield client
    client.close()


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Rest]:
    """A server of its own, for tests whose failure could leave the account unusable."""
    with running_server(tmp_path / "data") as pair:
        client = Rest(*pair)
        yield client
        client.close()


def _users(rest: Rest, inp: dict, count: int = 6) -> dict[str, list[int]]:
    """`count` users sent through `inp`: tier gold for odd n, silver for even n, n = 1..count."""
    mpids = [rest.mpid() for _ in range(count)]
    for n, mpid in enumerate(mpids, start=1):
        rest.send(inp, mpid, {"tier": "gold" if n % 2 else "silver", "n": n})
    gold = [m for n, m in enumerate(mpids, start=1) if n % 2]
    silver = [m for n, m in enumerate(mpids, start=1) if not n % 2]
    big = [m for n, m in enumerate(mpids, start=1) if n > 2]
    return {"all": mpids, "gold": gold, "silver": silver, "big": big}


def _walk(milestones: list[dict]) -> Iterator[dict]:
    for m in milestones:
        yield m
        yield from _walk(m.get("children") or [])


def _by_name(doc: dict) -> dict[str, dict]:
    return {m["name"]: m for m in _walk(doc["milestones"])}


def _order(doc: dict, parent: str | None = None) -> list[str]:
    level = doc["milestones"] if parent is None else _by_name(doc)[parent]["children"]
    return [m["name"] for m in level]


def _activate(rest: Rest, tmp_path: Path, *audience_ids: int) -> None:
    out = rest.output(tmp_path / "out")
    for a in audience_ids:
        rest.connect(a, out["id"])
    for a in audience_ids:
        rest.wait_settled(a)


# ---- journeys ------------------------------------------------------------------------------------


def test_create_journey_with_inputs_from_two_workspaces(rest: Rest) -> None:
    first = rest.input()
    ws = rest.workspace()
    second = rest.input(ws["id"], platform="ios")
    assert second["workspace"]["id"] == ws["id"]
    name = unique("Churn prevention")
    doc = rest.journey(
        [
            {"name": "Gold", "criteria": GOLD, "children": [{"name": "Big gold", "criteria": BIG}]},
            {"name": "Everyone else", "remaining": True},
        ],
        inputs=[first["name"], second["id"]],
        name=name,
    )
    assert isinstance(doc["id"], int) and doc["name"] == name
    assert sorted(doc["inputs"]) == sorted([first["name"], second["name"]])
    assert [m["name"] for m in doc["milestones"]] == ["Gold", "Everyone else"]
    gold, rest_split = doc["milestones"]
    assert gold["criteria"] == GOLD and [c["name"] for c in gold["children"]] == ["Big gold"]
    assert rest_split.get("remaining") is True and "criteria" not in rest_split
    for m in _walk(doc["milestones"]):
        assert isinstance(m["id"], int)
        assert set(m["audience"]) >= AUDIENCE_KEYS, m
        assert isinstance(m["audience"]["id"], int) and m["audience"]["id"] > 0
        assert m["audience"]["external_name"] == f"{name} – {m['name']}"  # default external name
        assert m["audience"]["status"] == "estimated"
        assert m["audience"]["connections"] == []
        assert m["audience"]["size"]["kind"] in {"estimate", "too_small", "error"}
    ids = [m["audience"]["id"] for m in _walk(doc["milestones"])]
    assert len(set(ids)) == len(ids)

    assert rest.document(doc["id"])["milestones"] == doc["milestones"]
    listed = {j["id"]: j for j in rest.ok("GET", "/api/v1/journeys")["journeys"]}
    entry = listed[doc["id"]]
    assert set(entry) == {"id", "name", "inputs", "audiences", "activated", "updated_at"}, entry
    assert entry["name"] == name and sorted(entry["inputs"]) == sorted(doc["inputs"])
    assert entry["audiences"] == 3 and entry["activated"] == 0
    assert isinstance(entry["updated_at"], int)


def test_inputs_omitted_select_every_input_existing_then(rest: Rest) -> None:
    rest.input()
    existing = {i["name"] for i in rest.ok("GET", "/api/v1/inputs")["inputs"]}
    doc = rest.journey([{"name": "all", "criteria": EVERYONE}])
    later = rest.input()
    assert set(doc["inputs"]) == existing
    assert later["name"] not in rest.document(doc["id"])["inputs"]


def test_unknown_input_is_refused(rest: Rest) -> None:
    name = unique("journey")
    msg = rest.refused(
        "POST",
        "/api/v1/journeys",
        (400, 404),
        json={"name": name, "inputs": ["no-such-input"], "milestones": []},
    )
    assert "no-such-input" in msg
    assert name not in {j["name"] for j in rest.ok("GET", "/api/v1/journeys")["journeys"]}


def test_rename_journey(rest: Rest) -> None:
    doc = rest.journey([{"name": "a", "criteria": EVERYONE}])
    other = rest.journey()
    new = unique("renamed")
    renamed = rest.ok("PATCH", f"/api/v1/journeys/{doc['id']}", json={"name": new})
    assert renamed["name"] == new and renamed["id"] == doc["id"]
    assert rest.document(doc["id"])["name"] == new
    assert _by_name(renamed)["a"]["audience"]["id"] == doc["milestones"][0]["audience"]["id"]
    msg = rest.refused("PATCH", f"/api/v1/journeys/{other['id']}", 409, json={"name": new.upper()})
    assert new.upper() in msg or new in msg
    rest.refused("PATCH", f"/api/v1/journeys/{doc['id']}", 400, json={"name": ""})


def test_delete_journey_only_when_empty(rest: Rest) -> None:
    doc = rest.journey([{"name": "only", "criteria": EVERYONE}])
    msg = rest.refused("DELETE", f"/api/v1/journeys/{doc['id']}", 409)
    assert "milestone" in msg and "first" in msg, msg
    assert rest.document(doc["id"])["milestones"][0]["name"] == "only"
    rest.ok("DELETE", f"/api/v1/milestones/{doc['milestones'][0]['id']}", 204)
    assert rest.call("DELETE", f"/api/v1/journeys/{doc['id']}").status_code == 204
    rest.refused("GET", f"/api/v1/journeys/{doc['id']}", 404, "NOT_FOUND")
    rest.refused("DELETE", f"/api/v1/journeys/{doc['id']}", 404, "NOT_FOUND")
    assert doc["id"] not in {j["id"] for j in rest.ok("GET", "/api/v1/journeys")["journeys"]}


# ---- milestones ------------------------------------------------------------------------------------


def test_create_milestones_at_positions_under_root_milestone_and_split(rest: Rest) -> None:
    doc = rest.journey()
    j = doc["id"]
    b = rest.milestone(j, "b", GOLD)
    assert b["position"] == 0 and b["parent_id"] is None and b["journey_id"] == j
    assert set(b["audience"]) >= AUDIENCE_KEYS and b["criteria"] == GOLD
    rest.milestone(j, "a", SILVER, position=0)
    rest.milestone(j, "c", BIG)  # no position: last
    rest.milestone(j, "between", EVERYONE, position=1)
    assert _order(rest.document(j)) == ["a", "between", "b", "c"]
    rest.refused(
        "POST",
        f"/api/v1/journeys/{j}/milestones",
        400,
        json={"parent_id": None, "name": "far", "criteria": GOLD, "position": 9},
    )
    child = rest.milestone(j, "b child", BIG, parent_id=b["id"])
    assert child["parent_id"] == b["id"] and child["position"] == 0
    split = rest.milestone(j, "rest", parent_id=None, remaining=True)
    assert split["remaining"] is True and split["position"] == 4
    under_split = rest.milestone(j, "under rest", GOLD, parent_id=split["id"])
    assert under_split["parent_id"] == split["id"]
    d = rest.document(j)
    assert _order(d) == ["a", "between", "b", "c", "rest"]
    assert _order(d, "b") == ["b child"] and _order(d, "rest") == ["under rest"]
    assert [m["position"] for m in d["milestones"]] == [0, 1, 2, 3, 4]
    got = rest.ok("GET", f"/api/v1/milestones/{child['id']}")
    assert got["id"] == child["id"] and got["audience"]["id"] == child["audience"]["id"]
    # a parent from another journey, or one that does not exist, is refused
    other = rest.journey([{"name": "x", "criteria": EVERYONE}])
    rest.refused(
        "POST",
        f"/api/v1/journeys/{j}/milestones",
        (400, 404),
        json={"parent_id": other["milestones"][0]["id"], "name": "stray", "criteria": GOLD},
    )
    rest.refused(
        "POST",
        f"/api/v1/journeys/{j}/milestones",
        (400, 404),
        json={"parent_id": 987654, "name": "s", "criteria": GOLD},
    )
    rest.refused(
        "POST",
        "/api/v1/journeys/987654/milestones",
        404,
        json={"parent_id": None, "name": "s", "criteria": GOLD},
    )
    assert "stray" not in _by_name(rest.document(j))


def test_rename_milestone_and_names_unique_in_a_journey(rest: Rest) -> None:
    doc = rest.journey([{"name": "one", "criteria": GOLD}, {"name": "two", "criteria": SILVER}])
    one, two = doc["milestones"]
    renamed = rest.ok("PATCH", f"/api/v1/milestones/{one['id']}", json={"name": "uno"})
    assert renamed["name"] == "uno" and renamed["criteria"] == GOLD
    assert renamed["audience"]["id"] == one["audience"]["id"]
    msg = rest.refused("PATCH", f"/api/v1/milestones/{two['id']}", 409, json={"name": "UNO"})
    assert "unique" in msg or "already exists" in msg
    rest.refused(
        "POST",
        f"/api/v1/journeys/{doc['id']}/milestones",
        409,
        json={"parent_id": None, "name": "two", "criteria": GOLD},
    )
    assert _order(rest.document(doc["id"])) == ["uno", "two"]


@pytest.mark.parametrize(
    ("criteria", "path"),
    [
        (
            {"all": [GOLD, {"type": "user_attribute", "attribute": "x", "op": "bogus", "value": 1}]},
            "all[1].op",
        ),
        ({"any": [{"type": "no_such_leaf"}]}, "any[0].type"),
        (
            {
                "all": [
                    {
                        "type": "event",
                        "event": {"event_type": "custom_event", "name": "x"},
                        "where": [{"attribute": "a", "op": "matches", "value": "(?=look)ahead"}],
                    }
                ]
            },
            "all[0].where[0].value",
        ),
        ({"not": {"type": "user_attribute", "attribute": "n", "op": "greater_than", "value": [1]}}, "not"),
    ],
)
def test_invalid_criteria_are_refused_naming_the_path(rest: Rest, criteria: dict, path: str) -> None:
    doc = rest.journey([{"name": "m", "criteria": GOLD}])
    m = doc["milestones"][0]
    msg = rest.refused("PATCH", f"/api/v1/milestones/{m['id']}", 400, json={"criteria": criteria})
    assert path in msg, msg
    msg = rest.refused(
        "POST",
        f"/api/v1/journeys/{doc['id']}/milestones",
        400,
        json={"parent_id": None, "name": "n", "criteria": criteria},
    )
    assert path in msg, msg
    msg = rest.refused(
        "POST",
        "/api/v1/journeys",
        400,
        json={"name": unique("bad"), "milestones": [{"name": "x", "criteria": criteria}]},
    )
    assert path in msg, msg
    after = rest.document(doc["id"])
    assert _order(after) == ["m"] and after["milestones"][0]["criteria"] == GOLD


def test_reorder_with_position(rest: Rest) -> None:
    doc = rest.journey(
        [
            {"name": "a", "criteria": GOLD},
            {"name": "b", "criteria": SILVER},
            {"name": "c", "criteria": BIG},
            {"name": "rest", "remaining": True},
        ]
    )
    m = _by_name(doc)
    ids_before = {n: x["audience"]["id"] for n, x in m.items()}
    moved = rest.ok("PATCH", f"/api/v1/milestones/{m['c']['id']}", json={"position": 0})
    assert moved["position"] == 0
    d = rest.document(doc["id"])
    assert _order(d) == ["c", "a", "b", "rest"]
    assert [x["position"] for x in d["milestones"]] == [0, 1, 2, 3]
    rest.ok("PATCH", f"/api/v1/milestones/{m['c']['id']}", json={"position": 2})
    assert _order(rest.document(doc["id"])) == ["a", "b", "c", "rest"]
    # the remaining split cannot be reordered, and nothing goes after it
    msg = rest.refused("PATCH", f"/api/v1/milestones/{m['rest']['id']}", 409, json={"position": 0})
    assert "remaining" in msg and "last" in msg, msg
    assert _order(rest.document(doc["id"])) == ["a", "b", "c", "rest"]
    assert {n: x["audience"]["id"] for n, x in _by_name(rest.document(doc["id"])).items()} == ids_before


def test_delete_milestones_last_to_first(rest: Rest) -> None:
    doc = rest.journey(
        [
            {"name": "a", "criteria": GOLD, "children": [{"name": "a1", "criteria": BIG}]},
            {"name": "b", "criteria": SILVER},
            {"name": "rest", "remaining": True},
        ]
    )
    m = _by_name(doc)
    refs = rest.journey(
        [
            {
                "name": "uses b",
                "criteria": {"type": "audience", "audience_id": m["b"]["audience"]["id"], "member": True},
            }
        ]
    )

    msg = rest.refused("DELETE", f"/api/v1/milestones/{m['a']['id']}", 409, "JOURNEY_RULE")
    assert "a1" in msg and "first" in msg, msg
    # b is not the last sibling: the remaining split comes after it and goes first
    msg = rest.refused("DELETE", f"/api/v1/milestones/{m['b']['id']}", 409, "JOURNEY_RULE")
    assert "rest" in msg and "remaining" in msg and "first" in msg, msg
    assert len(list(_walk(rest.document(doc["id"])["milestones"]))) == 4
    rest.ok("DELETE", f"/api/v1/milestones/{m['rest']['id']}", 204)
    # now b is last, but another journey refers to its audience
    msg = rest.refused("DELETE", f"/api/v1/milestones/{m['b']['id']}", 409, "JOURNEY_RULE")
    assert "uses b" in msg and "reference" in msg, msg
    rest.ok("DELETE", f"/api/v1/milestones/{refs['milestones'][0]['id']}", 204)
    rest.ok("DELETE", f"/api/v1/milestones/{m['b']['id']}", 204)
    rest.refused("GET", f"/api/v1/milestones/{m['b']['id']}", 404)
    rest.refused("GET", f"/api/v1/audiences/{m['b']['audience']['id']}", 404)
    msg = rest.refused("DELETE", f"/api/v1/milestones/{m['a']['id']}", 409, "JOURNEY_RULE")
    assert "a1" in msg, msg
    rest.ok("DELETE", f"/api/v1/milestones/{m['a1']['id']}", 204)
    rest.ok("DELETE", f"/api/v1/milestones/{m['a']['id']}", 204)
    assert rest.document(doc["id"])["milestones"] == []
    rest.refused("DELETE", f"/api/v1/milestones/{m['a']['id']}", 404, "NOT_FOUND")


def test_remaining_split_rules(rest: Rest) -> None:
    doc = rest.journey()
    j = doc["id"]
    url = f"/api/v1/journeys/{j}/milestones"
    msg = rest.refused("POST", url, 409, json={"parent_id": None, "name": "rest", "remaining": True})
    assert "milestone" in msg, msg
    a = rest.milestone(j, "a", GOLD)
    split = rest.milestone(j, "rest", remaining=True)
    assert split["position"] == 1
    rest.refused("POST", url, 409, json={"parent_id": None, "name": "rest2", "remaining": True})
    rest.refused(
        "POST", url, (400, 409), json={"parent_id": None, "name": "r", "remaining": True, "criteria": GOLD}
    )
    # a milestone cannot be placed after the split; without a position it goes before it
    msg = rest.refused(
        "POST", url, 409, json={"parent_id": None, "name": "late", "criteria": SILVER, "position": 2}
    )
    assert "last" in msg, msg
    rest.milestone(j, "b", SILVER)
    assert _order(rest.document(j)) == ["a", "b", "rest"]
    # its criteria are derived and read-only
    msg = rest.refused("PATCH", f"/api/v1/milestones/{split['id']}", 409, json={"criteria": GOLD})
    assert "remaining" in msg, msg
    rest.ok("PATCH", f"/api/v1/milestones/{split['id']}", json={"name": "everyone else"})
    node = _by_name(rest.document(j))["everyone else"]
    assert node.get("remaining") is True and "criteria" not in node
    assert node["derived_criteria"] == {"not": {"any": [GOLD, SILVER]}}
    # a split under a milestone, and milestones under a split
    rest.refused("POST", url, 409, json={"parent_id": a["id"], "name": "a rest", "remaining": True})
    rest.milestone(j, "a big", BIG, parent_id=a["id"])
    rest.milestone(j, "a rest", parent_id=a["id"], remaining=True)
    rest.milestone(j, "under split", BIG, parent_id=split["id"])
    d = rest.document(j)
    assert _order(d, "a") == ["a big", "a rest"] and _order(d, "everyone else") == ["under split"]


def test_audience_ids_are_stable_and_never_reused(rest: Rest) -> None:
    doc = rest.journey([{"name": "a", "criteria": GOLD}, {"name": "b", "criteria": SILVER}])
    m = _by_name(doc)
    before = {n: x["audience"]["id"] for n, x in m.items()}
    rest.ok("PATCH", f"/api/v1/milestones/{m['a']['id']}", json={"name": "a2", "criteria": BIG})
    rest.ok("PATCH", f"/api/v1/milestones/{m['b']['id']}", json={"position": 0})
    rest.ok("PATCH", f"/api/v1/journeys/{doc['id']}", json={"name": unique("renamed")})
    after = {x["id"]: x["audience"]["id"] for x in _walk(rest.document(doc["id"])["milestones"])}
    assert after == {m["a"]["id"]: before["a"], m["b"]["id"]: before["b"]}
    highest = max(before.values())
    rest.ok("DELETE", f"/api/v1/milestones/{m['a']['id']}", 204)
    rest.ok("DELETE", f"/api/v1/milestones/{m['b']['id']}", 204)
    again = rest.milestone(doc["id"], "a", GOLD)
    other = rest.journey([{"name": "x", "criteria": EVERYONE}])
    new_ids = [again["audience"]["id"], other["milestones"][0]["audience"]["id"]]
    assert all(i > highest for i in new_ids), (new_ids, before)
    assert len(set(new_ids)) == 2


def test_audience_references_across_journeys_and_to_ancestors(rest: Rest) -> None:
    inp = rest.input()
    users = _users(rest, inp)
    base = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    gold = base["milestones"][0]["audience"]["id"]
    doc = rest.journey(
        [
            {
                "name": "p",
                "criteria": EVERYONE,
                "children": [
                    {
                        "name": "in gold and parent",
                        "criteria": {
                            "all": [
                                {"type": "audience", "audience_id": gold, "member": True},
                                {
                                    "type": "audience",
                                    "journey": base["name"],
                                    "milestone": "gold",
                                    "member": True,
                                },
                            ]
                        },
                    }
                ],
            }
        ],
        inputs=[inp["name"]],
    )
    child = _by_name(doc)["in gold and parent"]
    assert child["criteria"]["all"][1] == {"type": "audience", "audience_id": gold, "member": True}
    parent_ref = {"type": "audience", "audience_id": _by_name(doc)["p"]["audience"]["id"], "member": True}
    rest.ok("PATCH", f"/api/v1/milestones/{child['id']}", json={"criteria": {"all": [parent_ref, GOLD]}})
    assert rest.mpids(child["audience"]["id"]) == sorted(users["gold"])
    rest.refused(
        "PATCH",
        f"/api/v1/milestones/{child['id']}",
        404,
        json={"criteria": {"type": "audience", "audience_id": 99_999_999, "member": True}},
    )


# ---- reference cycles: each on a server of its own, since a stored cycle breaks evaluation ---------


def _cycle_refused(rest: Rest, doc: dict, milestone: str, criteria: dict) -> None:
    target = _by_name(doc)[milestone]
    msg = rest.refused("PATCH", f"/api/v1/milestones/{target['id']}", 409, json={"criteria": criteria})
    assert "cycle" in msg, msg
    after = rest.call("GET", f"/api/v1/journeys/{doc['id']}")
    assert after.status_code == 200, f"the refused edit left the journey unreadable: {after.text}"
    assert _by_name(after.json())[milestone]["criteria"] == target["criteria"], "a refused edit was stored"
    # the account keeps working
    rest.journey([{"name": "still works", "criteria": EVERYONE}])


def test_reference_to_a_later_sibling_is_a_cycle(isolated: Rest) -> None:
    doc = isolated.journey([{"name": "first", "criteria": GOLD}, {"name": "second", "criteria": SILVER}])
    later = _by_name(doc)["second"]["audience"]["id"]
    _cycle_refused(isolated, doc, "first", {"type": "audience", "audience_id": later, "member": False})


def test_reference_to_an_own_descendant_is_a_cycle(isolated: Rest) -> None:
    doc = isolated.journey(
        [{"name": "top", "criteria": GOLD, "children": [{"name": "below", "criteria": BIG}]}]
    )
    below = _by_name(doc)["below"]["audience"]["id"]
    _cycle_refused(isolated, doc, "top", {"type": "audience", "audience_id": below, "member": True})


def test_reference_to_itself_is_a_cycle(isolated: Rest) -> None:
    doc = isolated.journey([{"name": "self", "criteria": GOLD}])
    own = doc["milestones"][0]["audience"]["id"]
    _cycle_refused(isolated, doc, "self", {"type": "audience", "audience_id": own, "member": True})


def test_cycle_across_journeys_is_refused(isolated: Rest) -> None:
    one = isolated.journey([{"name": "one", "criteria": GOLD}])
    two = isolated.journey(
        [
            {
                "name": "two",
                "criteria": {
                    "type": "audience",
                    "audience_id": one["milestones"][0]["audience"]["id"],
                    "member": True,
                },
            }
        ]
    )
    _cycle_refused(
        isolated,
        one,
        "one",
        {"type": "audience", "audience_id": two["milestones"][0]["audience"]["id"], "member": True},
    )


def test_reference_to_an_earlier_sibling_is_allowed(isolated: Rest) -> None:
    """SPEC §2: only later siblings and descendants close a cycle; an earlier sibling does not."""
    inp = isolated.input()
    users = _users(isolated, inp)
    doc = isolated.journey(
        [{"name": "gold", "criteria": GOLD}, {"name": "silver", "criteria": SILVER}], inputs=[inp["name"]]
    )
    gold = _by_name(doc)["gold"]["audience"]["id"]
    silver = _by_name(doc)["silver"]
    criteria = {"all": [{"type": "audience", "audience_id": gold, "member": False}, BIG]}
    resp = isolated.call("PATCH", f"/api/v1/milestones/{silver['id']}", json={"criteria": criteria})
    assert resp.status_code == 200, resp.text
    assert isolated.mpids(silver["audience"]["id"]) == sorted(set(users["big"]) - set(users["gold"]))


# ---- live changes ----------------------------------------------------------------------------------


def _three_way(rest: Rest, inp: dict) -> dict:
    return rest.journey(
        [
            {"name": "gold", "criteria": GOLD},
            {"name": "big", "criteria": BIG},
            {"name": "rest", "remaining": True},
        ],
        inputs=[inp["name"]],
    )


def test_edit_moves_users_of_estimated_paths(rest: Rest) -> None:
    inp = rest.input()
    u = _users(rest, inp)
    doc = _three_way(rest, inp)
    m = _by_name(doc)
    a = {n: x["audience"]["id"] for n, x in m.items()}
    everyone = set(u["all"])
    assert rest.mpids(a["gold"]) == sorted(u["gold"])
    assert rest.mpids(a["big"]) == sorted(set(u["big"]) - set(u["gold"]))
    assert rest.mpids(a["rest"]) == sorted(everyone - set(u["big"]) - set(u["gold"]))
    sizes = {n: x["audience"]["size"] for n, x in _by_name(rest.document(doc["id"])).items()}
    assert sizes["gold"]["kind"] == "estimate" and sizes["gold"]["exact"] is True
    assert sizes["gold"]["value"] == len(u["gold"])
    rest.ok("PATCH", f"/api/v1/milestones/{m['gold']['id']}", json={"criteria": SILVER})
    assert rest.mpids(a["gold"]) == sorted(u["silver"])
    assert rest.mpids(a["big"]) == sorted(set(u["big"]) - set(u["silver"]))
    assert rest.mpids(a["rest"]) == sorted(everyone - set(u["big"]) - set(u["silver"]))
    rest.ok("PATCH", f"/api/v1/milestones/{m['big']['id']}", json={"position": 0})
    assert rest.mpids(a["big"]) == sorted(u["big"])
    assert rest.mpids(a["gold"]) == sorted(set(u["silver"]) - set(u["big"]))


def test_edit_reevaluates_activated_later_siblings_and_the_remaining_split(
    rest: Rest, tmp_path: Path
) -> None:
    inp = rest.input()
    u = _users(rest, inp)
    doc = _three_way(rest, inp)
    m = _by_name(doc)
    a = {n: x["audience"]["id"] for n, x in m.items()}
    _activate(rest, tmp_path, a["big"], a["rest"])
    everyone = set(u["all"])
    assert rest.wait_members(a["big"], sorted(set(u["big"]) - set(u["gold"]))) == sorted(
        set(u["big"]) - set(u["gold"])
    )
    assert rest.mpids(a["rest"]) == sorted(everyone - set(u["big"]) - set(u["gold"]))

    rest.ok("PATCH", f"/api/v1/milestones/{m['gold']['id']}", json={"criteria": SILVER})
    want_big = sorted(set(u["big"]) - set(u["silver"]))
    assert rest.wait_members(a["big"], want_big) == want_big, "editing an earlier sibling left 'big' stale"
    assert rest.mpids(a["rest"]) == sorted(everyone - set(u["big"]) - set(u["silver"]))
    assert rest.audience(a["big"])["size"] == {"kind": "actual", "value": len(want_big), "exact": True}


def test_reorder_reevaluates_activated_siblings(rest: Rest, tmp_path: Path) -> None:
    inp = rest.input()
    u = _users(rest, inp)
    doc = _three_way(rest, inp)
    m = _by_name(doc)
    a = {n: x["audience"]["id"] for n, x in m.items()}
    _activate(rest, tmp_path, a["gold"], a["big"])
    rest.wait_members(a["gold"], u["gold"])
    rest.ok("PATCH", f"/api/v1/milestones/{m['big']['id']}", json={"position": 0})
    assert rest.wait_members(a["big"], u["big"]) == sorted(u["big"]), "reordering left 'big' stale"
    want_gold = sorted(set(u["gold"]) - set(u["big"]))
    assert rest.wait_members(a["gold"], want_gold) == want_gold


def test_new_data_moves_users_of_activated_audiences(rest: Rest, tmp_path: Path) -> None:
    inp = rest.input()
    u = _users(rest, inp)
    doc = _three_way(rest, inp)
    a = {n: x["audience"]["id"] for n, x in _by_name(doc).items()}
    _activate(rest, tmp_path, a["gold"], a["big"])
    rest.wait_members(a["gold"], u["gold"])
    newcomer = rest.mpid()
    rest.send(inp, newcomer, {"tier": "gold", "n": 1})
    assert rest.wait_members(a["gold"], [*u["gold"], newcomer]) == sorted([*u["gold"], newcomer])
    mover = u["gold"][-1]  # n = 5: leaves gold for big
    rest.send(inp, mover, {"tier": "bronze"})
    assert rest.wait_members(a["gold"], [x for x in [*u["gold"], newcomer] if x != mover]) == sorted(
        x for x in [*u["gold"], newcomer] if x != mover
    )
    assert mover in rest.wait_members(a["big"], sorted({*u["big"], mover} - set(u["gold"]) | {mover}))


def test_dry_runs_answer_per_activated_audience_and_change_nothing(rest: Rest, tmp_path: Path) -> None:
    inp = rest.input()
    u = _users(rest, inp)
    doc = _three_way(rest, inp)
    m = _by_name(doc)
    a = {n: x["audience"]["id"] for n, x in m.items()}
    _activate(rest, tmp_path, a["big"], a["rest"])
    big_now = sorted(set(u["big"]) - set(u["gold"]))
    rest.wait_members(a["big"], big_now)
    rest_now = sorted(set(u["all"]) - set(u["big"]) - set(u["gold"]))

    def snapshot() -> tuple:
        d = rest.document(doc["id"])
        shape = [
            (x["id"], x["name"], x.get("criteria"), x["position"], x["audience"]["id"])
            for x in _walk(d["milestones"])
        ]
        return shape, d["inputs"], rest.mpids(a["big"]), rest.mpids(a["rest"])

    before = snapshot()

    def dry(method: str, path: str, body: dict | None = None) -> dict[int, tuple[int, int]]:
        resp = rest.call(method, f"{path}?dry_run=true", **({} if body is None else {"json": body}))
        assert resp.status_code in (200, 201), resp.text  # 201 for POST: see the test below
        answer = resp.json()
        assert answer["dry_run"] is True and set(answer) == {"dry_run", "activated_audiences"}, answer
        rows = answer["activated_audiences"]
        for row in rows:
            assert set(row) == {"audience_id", "journey", "milestone", "enter", "leave"}, row
        # other journeys' activated audiences (other tests of the module) may be listed too
        rows = [r for r in rows if r["journey"] == doc["name"]]
        assert sorted(r["audience_id"] for r in rows) == sorted([a["big"], a["rest"]]), rows
        assert snapshot() == before, f"a dry run of {method} {path} changed something"
        return {r["audience_id"]: (r["enter"], r["leave"]) for r in rows}

    # edit gold to silver: big gains the big gold users, loses the big silver ones
    big_after = set(u["big"]) - set(u["silver"])
    rest_after = set(u["all"]) - set(u["big"]) - set(u["silver"])
    got = dry("PATCH", f"/api/v1/milestones/{m['gold']['id']}", {"criteria": SILVER})
    assert got[a["big"]] == (len(big_after - set(big_now)), len(set(big_now) - big_after))
    assert got[a["rest"]] == (len(rest_after - set(rest_now)), len(set(rest_now) - rest_after))
    # reorder big first: big gains every big user
    got = dry("PATCH", f"/api/v1/milestones/{m['big']['id']}", {"position": 0})
    assert got[a["big"]] == (len(set(u["big"]) - set(big_now)), 0)
    # a new first milestone taking everyone empties big and rest
    got = dry(
        "POST",
        f"/api/v1/journeys/{doc['id']}/milestones",
        {"parent_id": None, "name": "all", "criteria": EVERYONE, "position": 0},
    )
    assert got[a["big"]] == (0, len(big_now)) and got[a["rest"]] == (0, len(rest_now))
    # inputs: a journey over a fresh input with no users empties everything
    empty = rest.input()
    got = dry("PATCH", f"/api/v1/journeys/{doc['id']}", {"inputs": [empty["name"]]})
    assert got[a["big"]] == (0, len(big_now)) and got[a["rest"]] == (0, len(rest_now))
    # deleting needs the split gone first; as a dry run the refusal is the same as for real
    rest.refused("DELETE", f"/api/v1/milestones/{m['big']['id']}?dry_run=true", 409)
    got = dry("DELETE", f"/api/v1/milestones/{m['rest']['id']}")
    assert got[a["big"]] == (0, 0)
    assert snapshot() == before


def test_dry_run_of_a_new_milestone_does_not_answer_created(rest: Rest) -> None:
    """Nothing is created by a dry run, so it answers 200 (not 201 Created) like the other dry runs."""
    doc = rest.journey([{"name": "a", "criteria": GOLD}])
    resp = rest.call(
        "POST",
        f"/api/v1/journeys/{doc['id']}/milestones?dry_run=true",
        json={"parent_id": None, "name": "b", "criteria": SILVER},
    )
    assert resp.json()["dry_run"] is True
    assert _order(rest.document(doc["id"])) == ["a"]
    assert resp.status_code == 200, resp.status_code


def test_dry_run_of_an_invalid_change_is_refused_like_the_change(rest: Rest) -> None:
    doc = rest.journey([{"name": "a", "criteria": GOLD}])
    msg = rest.refused(
        "PATCH",
        f"/api/v1/milestones/{doc['milestones'][0]['id']}?dry_run=true",
        400,
        json={"criteria": {"type": "nope"}},
    )
    assert "type" in msg


def test_changing_inputs_reevaluates_like_an_edit(rest: Rest, tmp_path: Path) -> None:
    one, two = rest.input(), rest.input(rest.workspace()["id"])
    first, second = rest.mpid(), rest.mpid()
    rest.send(one, first, {"tier": "gold"})
    rest.send(two, second, {"tier": "gold"})
    estimated = rest.journey([{"name": "all", "criteria": EVERYONE}], inputs=[one["name"]])
    live = rest.journey([{"name": "all", "criteria": EVERYONE}], inputs=[one["name"]])
    est_a, live_a = estimated["milestones"][0]["audience"]["id"], live["milestones"][0]["audience"]["id"]
    _activate(rest, tmp_path, live_a)
    assert rest.mpids(est_a) == [first]
    assert rest.wait_members(live_a, [first]) == [first]
    for j in (estimated, live):
        updated = rest.ok("PATCH", f"/api/v1/journeys/{j['id']}", json={"inputs": [one["name"], two["id"]]})
        assert sorted(updated["inputs"]) == sorted([one["name"], two["name"]])
    assert rest.mpids(est_a) == sorted([first, second])
    assert rest.wait_members(live_a, [first, second]) == sorted([first, second]), (
        "changing inputs left it stale"
    )
    rest.ok("PATCH", f"/api/v1/journeys/{live['id']}", json={"inputs": [two["name"]]})
    assert rest.wait_members(live_a, [second]) == [second]
    rest.refused("PATCH", f"/api/v1/journeys/{live['id']}", (400, 404), json={"inputs": ["no-such-input"]})


# ---- malformed requests ------------------------------------------------------------------------------


def test_malformed_bodies_are_refused_never_a_500(rest: Rest) -> None:
    doc = rest.journey([{"name": "a", "criteria": GOLD}])
    j, mid = doc["id"], doc["milestones"][0]["id"]
    huge = 2**70
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/journeys", b"{not json"),
        ("POST", "/api/v1/journeys", []),
        ("POST", "/api/v1/journeys", {"name": 5}),
        ("POST", "/api/v1/journeys", {"name": "x", "milestones": "nope"}),
        ("POST", "/api/v1/journeys", {"name": "x", "milestones": [{"name": "m", "criteria": "gold"}]}),
        ("POST", "/api/v1/journeys", {"name": "x", "inputs": [None]}),
        ("POST", "/api/v1/journeys", {"name": "x", "inputs": [huge]}),
        ("POST", "/api/v1/journeys", {"name": "x", "extra": 1}),
        ("POST", "/api/v1/journeys", {"name": "x", "milestones": [{"name": "r", "remaining": True}]}),
        (
            "POST",
            "/api/v1/journeys",
            {
                "name": "y",
                "milestones": [{"name": "m", "criteria": {"all": [GOLD]}, "connections": [{"output": "o"}]}],
            },
        ),
        (
            "POST",
            "/api/v1/journeys",
            {"name": "z", "milestones": [{"name": "m", "criteria": GOLD}, {"name": "M", "criteria": GOLD}]},
        ),
        ("POST", f"/api/v1/journeys/{j}/milestones", {}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m"}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": GOLD, "position": -1}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": GOLD, "position": huge}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": GOLD, "parent_id": huge}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": GOLD, "parent_id": -3}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": GOLD, "parent_id": "1"}),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "m", "criteria": {"all": "x"}}),
        (
            "POST",
            f"/api/v1/journeys/{j}/milestones",
            {"name": "m", "criteria": {"type": "audience", "audience_id": huge, "member": True}},
        ),
        (
            "POST",
            f"/api/v1/journeys/{j}/milestones",
            {"name": "m", "criteria": {"type": "audience", "audience_id": "x", "member": True}},
        ),
        (
            "POST",
            f"/api/v1/journeys/{j}/milestones",
            {"name": "m", "criteria": {"type": "audience", "journey": 1, "milestone": None}},
        ),
        ("POST", f"/api/v1/journeys/{j}/milestones", {"name": "x" * 1000, "criteria": GOLD}),
        ("POST", f"/api/v1/journeys/{huge}/milestones", {"name": "m", "criteria": GOLD}),
        ("PATCH", f"/api/v1/milestones/{mid}", {"position": "first"}),
        ("PATCH", f"/api/v1/milestones/{mid}", {"criteria": None, "name": None, "bogus": True}),
        ("PATCH", f"/api/v1/milestones/{mid}", {"criteria": []}),
        (
            "PATCH",
            f"/api/v1/milestones/{mid}",
            {
                "criteria": {
                    "type": "user_attribute",
                    "attribute": "n",
                    "op": "between",
                    "min": "a",
                    "max": {},
                }
            },
        ),
        (
            "PATCH",
            f"/api/v1/milestones/{mid}",
            {
                "criteria": {
                    "type": "event",
                    "event": {"event_type": "custom_event"},
                    "window": {"between_ago": {"from": 5, "to": 1, "unit": "days"}},
                }
            },
        ),
        ("PATCH", f"/api/v1/milestones/{huge}", {"name": "x"}),
        ("PATCH", f"/api/v1/journeys/{j}", {"inputs": []}),
        ("PATCH", f"/api/v1/journeys/{j}", {"inputs": "web"}),
        ("PATCH", f"/api/v1/journeys/{j}?dry_run=maybe", {"inputs": [1]}),
        ("DELETE", f"/api/v1/milestones/{huge}", None),
        ("DELETE", "/api/v1/milestones/0", None),
        ("DELETE", f"/api/v1/journeys/{huge}", None),
        ("GET", f"/api/v1/journeys/{huge}", None),
        ("GET", "/api/v1/journeys/abc", None),
        ("GET", f"/api/v1/milestones/{huge}", None),
    ]
    failures = []
    for method, path, body in cases:
        kw: dict[str, Any] = {}
        if isinstance(body, bytes):
            kw = {"content": body, "headers": {"Content-Type": "application/json"}}
        elif body is not None:
            kw = {"json": body}
        # a fresh connection per request: a server error may drop the connection it came on
        with httpx.Client(base_url=rest.server.url, headers=rest.admin.headers, timeout=60) as client:
            try:
                resp = client.request(method, path, **kw)
            except httpx.TransportError as exc:
                failures.append((method, path, body, repr(exc)))
                continue
        if not 400 <= resp.status_code < 500 or set(resp.json()) != {"error"}:
            failures.append((method, path, body, resp.status_code, resp.text))
    assert not failures, "\n".join(map(repr, failures))
    after = rest.document(j)
    assert [x["name"] for x in _walk(after["milestones"])] == ["a"]
    assert after["milestones"][0]["criteria"] == GOLD
    assert all(
        name not in {"x", "y", "z"}
        for name in (jj["name"] for jj in rest.ok("GET", "/api/v1/journeys")["journeys"])
    )
