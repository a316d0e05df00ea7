"""The `firehose` output against a real local HTTP partner: mParticle's audience protocol with
Milepost in mParticle's role (SPEC §6)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.outputs.inprocess import Local, drive
from tests.outputs.partner import Partner

from milepost.errors import InvalidRequest
from milepost.outputs.firehose import FIREHOSE

pytestmark = pytest.mark.unit

RESPONSE = {"type": "audience_membership_change_response", "id": "x", "timestamp_ms": 0}


@pytest.fixture
def partner() -> Iterator[Partner]:
    p = Partner()
    yield p
    p.close()


def _firehose(local: Local, partner: Partner, **settings: Any) -> int:
    partner.route("/fh", reply=lambda _: RESPONSE)
    out = local.runtime.catalog.create_output(
        "firehose",
        "fh",
        {"url": partner.url("/fh"), "api_key": "fh-key", "account_id": 42, **settings},
    )
    return out.id


def _messages(partner: Partner) -> list[dict[str, Any]]:
    return [r.json for r in partner.requests("/fh") if r.status == 200]


def _profiles(partner: Partner) -> list[tuple[str, str]]:
    return [
        (p["mpid"], p["audiences"][0]["action"])
        for m in _messages(partner)
        if m["type"] == "audience_membership_change_request"
        for p in m["user_profiles"]
    ]


def test_subscription_then_membership_changes(local: Local, partner: Partner) -> None:
    local.send(1, "gold", {"customer_id": "c1", "email": "one@example.com"})
    cid = local.connect(_firehose(local, partner), settings={"list": "L1"})
    runner = local.runner()
    try:
        drive(runner)
        first, second = _messages(partner)[:2]
        assert first["type"] == "audience_subscription_request" and first["action"] == "add"
        assert first["audience_id"] == local.audience and first["audience_name"] == "j – gold"
        assert first["audience_subscription_settings"] == {"list": "L1"}
        assert first["account"] == {"account_id": 42, "account_settings": {}}
        assert first["firehose_version"] and isinstance(first["timestamp_ms"], int)
        assert second["type"] == "audience_membership_change_request"
        (profile,) = second["user_profiles"]
        assert profile["mpid"] == "1"
        assert sorted(profile["user_identities"], key=lambda i: i["type"]) == [
            {"type": "customer", "encoding": "raw", "value": "c1"},
            {"type": "email", "encoding": "raw", "value": "one@example.com"},
        ]
        assert profile["audiences"] == [
            {
                "audience_id": local.audience,
                "audience_name": "j – gold",
                "audience_subscription_settings": {"list": "L1"},
                "action": "add",
            }
        ]
        request = partner.requests("/fh")[1]
        assert request.headers["Authorization"] == "Bearer fh-key"
        assert request.headers["Idempotency-Key"]

        local.send(1, "silver")
        drive(runner)
        assert _profiles(partner) == [("1", "add"), ("1", "delete")]
        assert runner.stats(cid, local.audience)["sent"] == 2
    finally:
        runner.close()


def test_rename_and_settings_change_send_update_and_delete_sends_remove(
    local: Local, partner: Partner
) -> None:
    cid = local.connect(_firehose(local, partner), settings={"list": "L1"})
    runner = local.runner()
    try:
        drive(runner)
        local.runtime.catalog.set_external_name(local.milestone, "Gold buyers")
        runner.names._read_at = None  # the external name is re-read at once (it is cached 5 s)
        drive(runner)
        local.runtime.catalog.update_connection(cid, settings={"list": "L2"})
        drive(runner)
        local.runtime.catalog.delete_connection(cid)
        local.runtime.journeys.refresh()
        drive(runner)
        subs = [m for m in _messages(partner) if m["type"] == "audience_subscription_request"]
        assert [(m["action"], m["audience_name"]) for m in subs] == [
            ("add", "j – gold"),
            ("update", "Gold buyers"),
            ("update", "Gold buyers"),
            ("remove", "Gold buyers"),
        ]
        assert subs[2]["audience_subscription_settings"] == {"list": "L2"}
        assert subs[2]["previous_audience_subscription_settings"] == {"list": "L1"}
        assert cid not in runner.workers
    finally:
        runner.close()


def test_suspend_subscription_faults_and_resume_delivers_the_backlog(local: Local, partner: Partner) -> None:
    cid = local.connect(_firehose(local, partner))
    runner = local.runner()
    try:
        drive(runner)  # subscribed, nobody to send yet
        partner.route("/fh", reply=lambda _: {**RESPONSE, "suspend_subscription": True})
        local.send(1, "gold", {"customer_id": "c1"})
        drive(runner)
        assert local.runtime.catalog.get_connection(cid).health == "faulted"
        stats = runner.stats(cid, local.audience)
        assert "suspend_subscription" in (stats["last_error"] or "") and stats["pending"] == 1
        tries = len(partner.requests("/fh"))
        local.send(2, "gold", {"customer_id": "c2"})
        drive(runner)
        assert len(partner.requests("/fh")) == tries  # paused, backlog kept

        partner.route("/fh", reply=lambda _: RESPONSE)
        runner.resume(cid)
        drive(runner)
        assert [p for p in _profiles(partner) if p[1] == "add"][-2:] == [("1", "add"), ("2", "add")]
        assert local.runtime.catalog.get_connection(cid).health == "ok"
        assert runner.stats(cid, local.audience)["pending"] == 0
    finally:
        runner.close()


def test_periodic_verification_faults_on_a_bad_answer(local: Local, partner: Partner) -> None:
    cid = local.connect(_firehose(local, partner, verify_interval_s=60))
    runner = local.runner()
    try:
        drive(runner)
        local.clock.advance(61_000)
        drive(runner)
        empty = [m for m in _messages(partner) if m.get("user_profiles") == []]
        assert len(empty) == 1 and empty[0]["type"] == "audience_membership_change_request"
        assert local.runtime.catalog.get_connection(cid).health == "ok"

        partner.route("/fh", reply=lambda _: {"unexpected": True})
        local.clock.advance(61_000)
        drive(runner)
        assert local.runtime.catalog.get_connection(cid).health == "faulted"
        assert "verification" in (runner.stats(cid, local.audience)["last_error"] or "")
        live = runner.live(cid)
        assert live[0]["kind"] == "verification" and live[0]["outcome"] == "failed"
    finally:
        runner.close()


def test_hashing_sets_the_encoding(local: Local, partner: Partner) -> None:
    partner.route("/fh", reply=lambda _: RESPONSE)
    out = local.runtime.catalog.create_output(
        "firehose", "hashed", {"url": partner.url("/fh")}, accepted_identities=["email"], hashing="sha256"
    )
    local.send(1, "gold", {"customer_id": "c1", "email": "One@Example.com"})
    local.connect(out.id)
    runner = local.runner()
    try:
        drive(runner)
        change = next(m for m in _messages(partner) if m.get("user_profiles"))
        (identity,) = change["user_profiles"][0]["user_identities"]
        assert identity["type"] == "email" and identity["encoding"] == "sha256"
        assert len(identity["value"]) == 64 and "@" not in identity["value"]
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({}, "settings.url"),
        ({"url": "ftp://x"}, "settings.url"),
        ({"url": "https://x.example", "account_id": -1}, "settings.account_id"),
        ({"url": "https://x.example", "verify_interval_s": 0}, "settings.verify_interval_s"),
        ({"url": "https://x.example", "batch_size": 0}, "settings.batch_size"),
        ({"url": "https://x.example", "account_settings": []}, "settings.account_settings"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        FIREHOSE.check_settings(settings, allow_private=True)
