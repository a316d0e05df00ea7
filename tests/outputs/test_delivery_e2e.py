"""Delivery end to end: a real `milepost serve`, data through its Events API, and a real local HTTP
server standing in for the partner (SPEC §6, §7.2)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.rest_runner import Rest, unique
from tests.outputs.partner import HANG, Partner
from tests.support.server import running_server

from milepost.outputs.webhook import verify

pytestmark = pytest.mark.api

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
SECRET = "whsec-test-0123456789"
ENV = {
    "MILEPOST_ALLOW_PRIVATE_OUTPUTS": "1",
    "MILEPOST_DELIVERY_POLL_S": "0.05",
    "MILEPOST_DELIVERY_BACKOFF_BASE_S": "0.2",
    "MILEPOST_DELIVERY_BACKOFF_MAX_S": "1",
}


@pytest.fixture(scope="module")
def partner() -> Iterator[Partner]:
    p = Partner()
    yield p
    p.close()


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    with running_server(tmp_path_factory.mktemp("data"), ENV) as (server, creds):
        client = Rest(server, creds)
        yield client
        client.close()


def _hook(rest: Rest, partner: Partner, path: str, **settings: Any) -> dict[str, Any]:
    body = {"url": partner.url(path), "secret": SECRET, **settings}
    return rest.ok(
        "POST", "/api/v1/outputs", 201, json={"type": "webhook", "name": unique("hook"), "settings": body}
    )


def _gold_audience(rest: Rest) -> tuple[dict[str, Any], int]:
    """A fresh input and a one-milestone journey of gold users sent through it."""
    inp = rest.input()
    doc = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=[inp["name"]])
    return inp, doc["milestones"][0]["audience"]["id"]


def _connect(rest: Rest, audience: int, output: int, **kw: Any) -> dict[str, Any]:
    conn = rest.ok("POST", f"/api/v1/audiences/{audience}/connections", 201, json={"output_id": output, **kw})
    rest.wait_settled(audience)
    return conn


def _connection(rest: Rest, conn_id: int) -> dict[str, Any]:
    return rest.ok("GET", f"/api/v1/connections/{conn_id}")


def _actions(changes: list[dict[str, Any]], mpid: int) -> list[str]:
    return [c["action"] for c in changes if c["mpid"] == mpid]


def test_enter_and_leave_reach_the_partner_signed(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    before = rest.mpid()
    rest.send(inp, before, {"tier": "gold"}, identities={"email": "before@example.com"})
    out = _hook(rest, partner, "/hook/basic")
    conn = _connect(rest, aud, out["id"])

    # On activation: the full current membership.
    synced = partner.wait(lambda: partner.accepted("/hook/basic"), what="the initial sync")
    assert [(c["mpid"], c["action"]) for c in synced] == [(before, "add")]

    user = rest.mpid()
    rest.send(inp, user, {"tier": "gold"}, identities={"email": "u@example.com", "customer_id": "c-1"})
    partner.wait(lambda: _actions(partner.accepted("/hook/basic"), user) == ["add"], what="the add")
    rest.send(inp, user, {"tier": "silver"})
    partner.wait(
        lambda: _actions(partner.accepted("/hook/basic"), user) == ["add", "remove"], what="the remove"
    )

    changes = partner.accepted("/hook/basic")
    add = next(c for c in changes if c["mpid"] == user)
    assert set(add) == {
        "id",
        "audience_id",
        "audience_name",
        "external_name",
        "mpid",
        "action",
        "identities",
        "device_identities",
        "timestamp_ms",
    }
    assert add["audience_id"] == aud and add["audience_name"] == "gold"
    assert add["identities"] == {"email": "u@example.com", "customer_id": "c-1"}
    assert add["device_identities"] == [] and isinstance(add["timestamp_ms"], int)
    assert len({c["id"] for c in changes}) == len(changes)
    for r in partner.requests("/hook/basic"):
        assert r.json["output_id"] == out["id"]
        sig = r.headers["X-Milepost-Signature"]
        assert verify(SECRET, sig, r.body, int(time.time())), sig
        assert not verify("wrong-secret", sig, r.body, int(time.time()))
        assert r.headers["Idempotency-Key"]
    stats = rest.wait_connection(conn["id"], lambda c: c["delivery"]["sent"] == 3)["delivery"]
    assert stats["pending"] == 0 and stats["failed"] == 0 and stats["phase"] == "stream"
    assert _connection(rest, conn["id"])["health"] == "ok"


def test_429_and_500_are_retried_with_the_same_ids(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    partner.route("/hook/flaky", script=[429, 500, 503], retry_after="1")
    conn = _connect(rest, aud, _hook(rest, partner, "/hook/flaky")["id"])
    user = rest.mpid()
    rest.send(inp, user, {"tier": "gold"})
    partner.wait(lambda: _actions(partner.accepted("/hook/flaky"), user) == ["add"], what="the retried add")
    tries = partner.requests("/hook/flaky")
    assert [r.status for r in tries] == [429, 500, 503, 200]
    assert tries[1].at - tries[0].at >= 0.9  # Retry-After honoured
    assert len({r.headers["Idempotency-Key"] for r in tries}) == 1
    assert len({tuple(c["id"] for c in r.changes) for r in tries}) == 1
    c = rest.wait_connection(conn["id"], lambda c: c["health"] == "ok" and c["delivery"]["sent"] == 1)
    assert c["delivery"]["last_error"].startswith("HTTP 503")


def test_403_faults_and_resume_delivers_the_backlog(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    partner.route("/hook/denied", default=403)
    conn = _connect(rest, aud, _hook(rest, partner, "/hook/denied")["id"])
    first, second = rest.mpid(), rest.mpid()
    rest.send(inp, first, {"tier": "gold"})
    faulted = rest.wait_connection(conn["id"], lambda c: c["health"] == "faulted")
    assert "403" in faulted["delivery"]["last_error"]
    assert faulted["status"] == "active"
    rest.send(inp, second, {"tier": "gold"})
    partner.route("/hook/denied", default=200)
    time.sleep(0.6)  # paused: nothing is sent while faulted
    assert partner.accepted("/hook/denied") == []
    assert len(partner.requests("/hook/denied")) == 1
    resumed = rest.ok("POST", f"/api/v1/connections/{conn['id']}/resume")
    assert resumed["health"] == "ok"
    got = partner.wait(
        lambda: len(partner.accepted("/hook/denied")) >= 2 and partner.accepted("/hook/denied")
    )
    assert [(c["mpid"], c["action"]) for c in got] == [(first, "add"), (second, "add")]
    rest.refused("POST", "/api/v1/connections/987654321/resume", 404, "NOT_FOUND")


def test_refused_records_go_to_dead_letters_and_delivery_goes_on(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    users = [rest.mpid() for _ in range(4)]
    bad = users[1]
    for m in users:
        rest.send(inp, m, {"tier": "gold"})
    partner.route("/hook/picky", refuse=lambda c: c["mpid"] == bad)
    conn = _connect(rest, aud, _hook(rest, partner, "/hook/picky")["id"])
    c = rest.wait_connection(conn["id"], lambda c: c["delivery"]["sent"] + c["delivery"]["failed"] == 4)
    assert c["delivery"]["failed"] == 1 and c["delivery"]["dead_letters"] == 1 and c["health"] == "ok"
    assert sorted(x["mpid"] for x in partner.accepted("/hook/picky")) == sorted(set(users) - {bad})
    later = rest.mpid()
    rest.send(inp, later, {"tier": "gold"})
    partner.wait(
        lambda: _actions(partner.accepted("/hook/picky"), later) == ["add"], what="delivery going on"
    )


def test_a_hanging_partner_blocks_neither_ingestion_nor_other_connections(
    rest: Rest, partner: Partner
) -> None:
    inp, aud = _gold_audience(rest)
    partner.route("/hook/hang", default=HANG)
    slow = _connect(rest, aud, _hook(rest, partner, "/hook/hang", timeout_s=1)["id"])
    _connect(rest, aud, _hook(rest, partner, "/hook/fine")["id"])
    users = [rest.mpid() for _ in range(5)]
    for m in users:
        started = time.monotonic()
        rest.send(inp, m, {"tier": "gold"})  # asserts 202
        assert time.monotonic() - started < 1.0
    partner.wait(
        lambda: {c["mpid"] for c in partner.accepted("/hook/fine")} >= set(users),
        what="the healthy connection",
    )
    c = rest.wait_connection(slow["id"], lambda c: c["health"] == "retrying")
    assert "timed out" in c["delivery"]["last_error"]
    partner.route("/hook/hang", default=200)
    partner.wait(
        lambda: {c["mpid"] for c in partner.accepted("/hook/hang")} >= set(users), what="the slow connection"
    )


def test_deactivation_removes_members_and_reactivation_reconciles(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    a, b = rest.mpid(), rest.mpid()
    for m in (a, b):
        rest.send(inp, m, {"tier": "gold"})
    conn = _connect(rest, aud, _hook(rest, partner, "/hook/cycle")["id"], on_deactivate="remove_members")
    partner.wait(lambda: len(partner.accepted("/hook/cycle")) == 2, what="the sync")
    rest.ok("PATCH", f"/api/v1/connections/{conn['id']}", json={"status": "inactive"})
    got = partner.wait(lambda: len(partner.accepted("/hook/cycle")) == 4 and partner.accepted("/hook/cycle"))
    assert sorted((c["mpid"], c["action"]) for c in got[2:]) == [(a, "remove"), (b, "remove")]
    c = rest.mpid()
    rest.send(inp, c, {"tier": "gold"})
    rest.send(inp, a, {"tier": "silver"})
    rest.ok("PATCH", f"/api/v1/connections/{conn['id']}", json={"status": "active"})
    got = partner.wait(lambda: len(partner.accepted("/hook/cycle")) == 6 and partner.accepted("/hook/cycle"))
    assert sorted((c["mpid"], c["action"]) for c in got[4:]) == sorted([(b, "add"), (c, "add")])


def _to_file(rest: Rest, tmp_path: Path) -> tuple[dict[str, Any], int, Path]:
    """A gold audience connected to a file output: its input, its id, and the output's file."""
    inp, aud = _gold_audience(rest)
    out = rest.output(tmp_path / "files")
    _connect(rest, aud, out["id"])
    return inp, aud, tmp_path / "files" / f"milepost-output-{out['id']}.jsonl"


def _line_of(path: Path, user: int) -> dict[str, Any]:
    """The user's one line in the output's file, once it is written."""
    deadline = time.monotonic() + 15
    while not (path.exists() and str(user) in path.read_text()):
        assert time.monotonic() < deadline, "no line written"
        time.sleep(0.05)
    (line,) = [json.loads(x) for x in path.read_text().splitlines() if json.loads(x)["mpid"] == user]
    return line


def test_file_output_appends_json_lines(rest: Rest, tmp_path: Path) -> None:
    inp, aud, path = _to_file(rest, tmp_path)
    user = rest.mpid()
    rest.send(inp, user, {"tier": "gold"}, identities={"email": "f@example.com"})
    line = _line_of(path, user)
    assert line["is_member"] is True and line["audience_id"] == aud and line["audience_name"] == "gold"
    assert line["identities"] == {"email": "f@example.com"} and isinstance(line["timestamp"], int)


def test_output_settings_are_checked_by_their_type(rest: Rest, partner: Partner) -> None:
    def create(kind: str, settings: dict[str, Any]) -> str:
        body = {"type": kind, "name": unique("o"), "settings": settings}
        return rest.refused("POST", "/api/v1/outputs", 400, json=body)

    assert "unknown output type 'carrier-pigeon'" in create("carrier-pigeon", {})
    assert "webhook" in create("carrier-pigeon", {})  # the known types are listed
    assert create("webhook", {"url": "ftp://x.example", "secret": "s"}).startswith("settings.url")
    assert create("webhook", {"url": partner.url("/x")}).startswith("settings.secret")
    assert create("braze", {"base_url": "https://rest.example", "api_key": "k", "mode": "x"}).startswith(
        "settings.mode"
    )
    assert create("firehose", {"url": partner.url("/f"), "verify_interval_s": -1}).startswith(
        "settings.verify_interval_s"
    )
    names = {o["name"] for o in rest.ok("GET", "/api/v1/outputs")["outputs"]}
    assert not any(n.startswith("o-") for n in names)  # nothing was created


def test_credentials_are_encrypted_at_rest_and_never_shown(rest: Rest, partner: Partner) -> None:
    secret = "whsec-" + unique("plain")
    body = {"url": partner.url("/hook/secret"), "secret": secret, "batch_size": 5}
    out = rest.ok(
        "POST", "/api/v1/outputs", 201, json={"type": "webhook", "name": unique("s"), "settings": body}
    )
    assert "settings" not in out  # the answer to the creation holds no settings at all
    out = rest.ok("GET", f"/api/v1/outputs/{out['id']}")
    assert out["settings"] == {**body, "secret": "••••"}
    for shown in (rest.ok("GET", f"/api/v1/outputs/{out['id']}"), rest.ok("GET", "/api/v1/outputs")):
        assert secret not in json.dumps(shown)
    data_dir = rest.server.data_dir
    assert secret.encode() not in (data_dir / "catalog.sqlite").read_bytes()
    key = data_dir / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600

    # A masked secret sent back keeps the stored one; the output still signs with it.
    renamed = rest.ok(
        "PATCH", f"/api/v1/outputs/{out['id']}", json={"settings": {**out["settings"], "batch_size": 7}}
    )
    assert renamed["settings"]["batch_size"] == 7 and renamed["settings"]["secret"] == "••••"
    inp, aud = _gold_audience(rest)
    _connect(rest, aud, out["id"])
    user = rest.mpid()
    rest.send(inp, user, {"tier": "gold"})
    partner.wait(lambda: partner.accepted("/hook/secret"), what="a signed batch")
    r = partner.requests("/hook/secret")[0]
    assert verify(secret, r.headers["X-Milepost-Signature"], r.body, int(time.time()))


def test_live_view_and_metrics_show_the_flow(rest: Rest, partner: Partner) -> None:
    inp, aud = _gold_audience(rest)
    partner.route("/hook/live", script=[500])
    conn = _connect(rest, aud, _hook(rest, partner, "/hook/live")["id"])
    user = rest.mpid()
    rest.send(inp, user, {"tier": "gold"})
    partner.wait(lambda: partner.accepted("/hook/live"), what="the add")
    live = rest.wait_connection(conn["id"], lambda c: c["delivery"]["sent"] == 1)
    assert live["delivery"]["lag_ms"] == 0 and live["delivery"]["pending"] == 0
    view = rest.ok("GET", f"/api/v1/connections/{conn['id']}/live")
    messages = view["messages"]
    assert [m["response"]["status"] for m in messages[:2]] == [200, 500]  # newest first
    assert messages[0]["outcome"] == "delivered" and messages[1]["outcome"] == "failed"
    assert messages[1]["response"]["error"].startswith("HTTP 500")
    assert messages[0]["request"]["sample"] == [
        {"id": partner.accepted("/hook/live")[0]["id"], "mpid": user, "action": "add"}
    ]
    assert messages[0]["request"]["idempotency_key"] == messages[1]["request"]["idempotency_key"]
    rest.refused("GET", "/api/v1/connections/987654321/live", 404, "NOT_FOUND")

    text = rest.admin.get("/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("milepost_delivery_sent_total") and f'connection="{conn["id"]}"' in x
    )
    assert line.endswith(" 1")
    assert f'milepost_delivery_pending{{connection="{conn["id"]}"' in text
    assert "# TYPE milepost_delivery_lag_seconds gauge" in text


def test_evaluations_list_each_real_time_step_and_metrics_show_its_lag(rest: Rest, tmp_path: Path) -> None:
    inp, _aud, path = _to_file(rest, tmp_path)
    user = rest.mpid()
    sent_at = int(time.time() * 1000)
    rest.send(inp, user, {"tier": "gold"})
    line = _line_of(path, user)

    listed = rest.ok("GET", "/api/v1/evaluations?limit=1000")["evaluations"]
    assert [e["recorded_at"] for e in listed] == sorted(e["recorded_at"] for e in listed)
    (step,) = [e for e in listed if e["at"] == line["timestamp"]]  # the step that recorded the add
    assert step["adds"] >= 1 and step["batches"] >= 1 and step["first_seq"] <= step["last_seq"]
    assert sent_at <= step["at"] <= step["recorded_at"] <= int(time.time() * 1000)
    assert 0 <= step["oldest_batch_ms"] <= step["recorded_at"] - sent_at
    # The evaluator's times in it: it began after the batch was accepted (each rounded to a ms).
    assert step["cpu_ms"] >= 0 and step["waiting_ms"] >= 0
    assert step["cpu_ms"] + step["waiting_ms"] <= step["recorded_at"] - sent_at + 2
    assert len(rest.ok("GET", "/api/v1/evaluations?limit=1")["evaluations"]) == 1
    assert "limit" in rest.refused("GET", "/api/v1/evaluations?limit=0", 400)
    assert rest.admin.get("/api/v1/evaluations", headers={"Authorization": ""}).status_code == 401

    rest.ok("POST", "/api/v1/estimate", json={"criteria": GOLD, "inputs": [inp["name"]]})
    text = rest.admin.get("/metrics").text
    assert (
        float(
            next(x for x in text.splitlines() if x.startswith("milepost_estimate_seconds_count ")).split()[1]
        )
        >= 1
    )
    assert "# TYPE milepost_evaluation_lag_seconds histogram" in text
    counts = [x for x in text.splitlines() if x.startswith("milepost_evaluation_lag_seconds_count ")]
    assert len(counts) == 1 and float(counts[0].split()[1]) >= 1
    assert "# TYPE milepost_timer_lateness_seconds histogram" in text
    assert "milepost_timer_backlog " in text
