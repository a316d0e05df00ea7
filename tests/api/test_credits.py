"""Audience credits through the API (SPEC §2 "Credits", "Deactivating"): each test on a server of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conformance.rest_runner import Rest, assert_error
from tests.support.server import running_server

pytestmark = pytest.mark.api

EVERYONE: dict = {"all": []}


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[Rest]:
    with running_server(tmp_path / "data") as pair:
        client = Rest(*pair)
        yield client
        client.close()


def _audiences(rest: Rest, count: int) -> list[int]:
    doc = rest.journey([{"name": f"m{i}", "criteria": {"all": []}} for i in range(count)])
    return [m["audience"]["id"] for m in doc["milestones"]]


def _credits(rest: Rest) -> tuple[int, int, int]:
    s = rest.settings()
    assert s["available"] == max(0, s["audience_limit"] - s["activated"]), s
    return s["audience_limit"], s["activated"], s["available"]


def test_defaults(rest: Rest) -> None:
    assert _credits(rest) == (20, 0, 20)


def test_the_limit_is_enforced_and_a_refusal_changes_nothing(rest: Rest, tmp_path: Path) -> None:
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 2})
    a, b, c = _audiences(rest, 3)
    out = rest.output(tmp_path / "out")
    rest.connect(a, out["id"])
    rest.connect(b, out["id"])
    assert _credits(rest) == (2, 2, 0)
    msg = rest.refused(
        "POST", f"/api/v1/audiences/{c}/connections", 409, "CREDIT_LIMIT", json={"output_id": out["id"]}
    )
    assert "2" in msg and "limit" in msg, msg
    assert rest.ok("GET", f"/api/v1/audiences/{c}/connections")["connections"] == []
    assert rest.audience(c)["status"] == "estimated"
    assert _credits(rest) == (2, 2, 0)
    # an inactive connection needs no credit, but making it active does
    idle = rest.connect(c, out["id"], status="inactive")
    assert _credits(rest) == (2, 2, 0)
    rest.refused("PATCH", f"/api/v1/connections/{idle['id']}", 409, "CREDIT_LIMIT", json={"status": "active"})
    assert rest.ok("GET", f"/api/v1/connections/{idle['id']}")["status"] == "inactive"
    assert rest.audience(c)["status"] == "estimated"


def test_a_limit_of_one_and_of_zero(rest: Rest, tmp_path: Path) -> None:
    a, b = _audiences(rest, 2)
    out = rest.output(tmp_path / "out")
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 0})
    msg = rest.refused(
        "POST", f"/api/v1/audiences/{a}/connections", 409, "CREDIT_LIMIT", json={"output_id": out["id"]}
    )
    assert "0" in msg
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 1})
    rest.connect(a, out["id"])
    msg = rest.refused(
        "POST", f"/api/v1/audiences/{b}/connections", 409, "CREDIT_LIMIT", json={"output_id": out["id"]}
    )
    assert "1" in msg


def test_a_second_connection_on_an_activated_audience_is_free(rest: Rest, tmp_path: Path) -> None:
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 1})
    (a,) = _audiences(rest, 1)
    first, second = rest.output(tmp_path / "one"), rest.output(tmp_path / "two")
    rest.connect(a, first["id"])
    assert _credits(rest) == (1, 1, 0)
    rest.connect(a, second["id"])
    assert _credits(rest) == (1, 1, 0)
    assert len(rest.audience(a)["connections"]) == 2
    # deactivating one of the two keeps the audience activated
    conns = rest.ok("GET", f"/api/v1/audiences/{a}/connections")["connections"]
    rest.ok("PATCH", f"/api/v1/connections/{conns[0]['id']}", json={"status": "inactive"})
    assert rest.audience(a)["status"] == "activated" and _credits(rest) == (1, 1, 0)


def test_parallel_activations_never_exceed_the_limit(rest: Rest, tmp_path: Path) -> None:
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 3})
    audiences = _audiences(rest, 12)
    out = rest.output(tmp_path / "out")
    barrier = threading.Barrier(len(audiences))
    results: dict[int, httpx.Response] = {}
    errors: list[BaseException] = []

    def activate(audience_id: int) -> None:
        try:
            with httpx.Client(base_url=rest.server.url, headers=rest.admin.headers, timeout=60) as client:
                barrier.wait(10)
                results[audience_id] = client.post(
                    f"/api/v1/audiences/{audience_id}/connections", json={"output_id": out["id"]}
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=activate, args=(a,)) for a in audiences]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [201] * 3 + [409] * 9, [(a, r.status_code, r.text) for a, r in results.items()]
    for r in results.values():
        if r.status_code == 409:
            assert_error(r, 409, "CREDIT_LIMIT")
    assert _credits(rest) == (3, 3, 0)
    winners = {a for a, r in results.items() if r.status_code == 201}
    for a in audiences:
        assert rest.audience(a)["status"] == ("activated" if a in winners else "estimated")
        assert len(rest.ok("GET", f"/api/v1/audiences/{a}/connections")["connections"]) == (a in winners)


def test_the_limit_cannot_be_lowered_below_the_activated_count(rest: Rest, tmp_path: Path) -> None:
    audiences = _audiences(rest, 3)
    out = rest.output(tmp_path / "out")
    for a in audiences:
        rest.connect(a, out["id"])
    msg = rest.refused("PATCH", "/api/v1/settings", (400, 409), json={"audience_limit": 2})
    assert "3" in msg and "audience_limit" in msg, msg
    assert _credits(rest) == (20, 3, 17)
    assert rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 3})["audience_limit"] == 3
    assert _credits(rest) == (3, 3, 0)
    for bad in (-1, "5", None, 1.5, True, 10**12):
        rest.refused("PATCH", "/api/v1/settings", 400, json={"audience_limit": bad})
    assert _credits(rest) == (3, 3, 0)


def test_deactivation_frees_the_credit(rest: Rest, tmp_path: Path) -> None:
    rest.ok("PATCH", "/api/v1/settings", json={"audience_limit": 2})
    a, b, c = _audiences(rest, 3)
    out = rest.output(tmp_path / "out")
    conn_a = rest.connect(a, out["id"])
    conn_b = rest.connect(b, out["id"])
    rest.refused(
        "POST", f"/api/v1/audiences/{c}/connections", 409, "CREDIT_LIMIT", json={"output_id": out["id"]}
    )
    rest.ok("PATCH", f"/api/v1/connections/{conn_a['id']}", json={"status": "inactive"})
    assert _credits(rest) == (2, 1, 1)
    conn_c = rest.connect(c, out["id"])
    assert _credits(rest) == (2, 2, 0)
    rest.refused(
        "PATCH", f"/api/v1/connections/{conn_a['id']}", 409, "CREDIT_LIMIT", json={"status": "active"}
    )
    rest.ok("DELETE", f"/api/v1/connections/{conn_b['id']}", 204)
    assert _credits(rest) == (2, 1, 1)
    rest.ok("PATCH", f"/api/v1/connections/{conn_a['id']}", json={"status": "active"})
    assert _credits(rest) == (2, 2, 0)
    assert rest.audience(a)["status"] == "activated" and rest.audience(b)["status"] == "estimated"
    assert rest.audience(c)["status"] == "activated" and conn_c["status"] == "active"
