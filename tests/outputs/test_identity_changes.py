"""When a member's accepted identities change, the partner gets a remove with the old identities
and an add with the new (SPEC §6)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from tests.outputs.inprocess import SETTINGS, Local, drive
from tests.outputs.partner import Partner

pytestmark = pytest.mark.unit


@pytest.fixture
def partner() -> Iterator[Partner]:
    p = Partner()
    yield p
    p.close()


def _hook(local: Local, partner: Partner, **kw: object) -> int:
    settings = {"url": partner.url("/h"), "secret": "s"}
    return local.runtime.catalog.create_output("webhook", "hook", settings, **kw).id  # type: ignore[arg-type]


def _seen(partner: Partner) -> list[tuple[int, str, dict[str, str]]]:
    return [(c["mpid"], c["action"], c["identities"]) for c in partner.accepted("/h")]


def test_a_changed_identity_sends_remove_old_then_add_new(local: Local, partner: Partner) -> None:
    out = _hook(local, partner, accepted_identities=["customer_id"])
    local.send(1, "gold", {"customer_id": "old-1", "email": "e@example.com"})
    cid = local.connect(out)
    runner = local.runner()
    try:
        drive(runner)
        assert _seen(partner) == [(1, "add", {"customer_id": "old-1"})]
        local.clock.advance(1_000)
        local.send(1, identities={"customer_id": "new-1"})
        local.clock.advance(3_000)  # identities written in the last 2 s wait for the next scan
        drive(runner)
        assert _seen(partner)[1:] == [
            (1, "remove", {"customer_id": "old-1"}),
            (1, "add", {"customer_id": "new-1"}),
        ]
        ids = [c["id"] for c in partner.accepted("/h")]
        assert len(set(ids)) == 3

        # Unrelated identities (not accepted by this output) and unchanged ones send nothing.
        local.send(1, identities={"customer_id": "new-1", "email": "other@example.com"})
        local.clock.advance(3_000)
        drive(runner)
        assert len(partner.accepted("/h")) == 3
        assert runner.stats(cid, local.audience)["sent"] == 3
    finally:
        runner.close()


def test_a_member_gaining_an_accepted_identity_is_added(local: Local, partner: Partner) -> None:
    out = _hook(local, partner, accepted_identities=["email"])
    local.send(1, "gold", {"customer_id": "c1"})
    cid = local.connect(out)
    runner = local.runner()
    try:
        drive(runner)
        assert partner.accepted("/h") == []
        assert runner.stats(cid, local.audience)["ineligible"] == 1
        local.clock.advance(1_000)
        local.send(1, identities={"email": "late@example.com"})
        local.clock.advance(3_000)
        drive(runner)
        assert _seen(partner) == [(1, "add", {"email": "late@example.com"})]
    finally:
        runner.close()


def test_losing_the_only_accepted_identity_sends_just_the_remove(local: Local, partner: Partner) -> None:
    out = _hook(local, partner, accepted_identities=["customer_id"], hashing="sha256")
    local.send(1, "gold", {"customer_id": "c1"})
    local.connect(out)
    runner = local.runner()
    try:
        drive(runner)
        (first,) = _seen(partner)
        local.clock.advance(1_000)
        local.send(2, "silver", {"customer_id": "c1-moved"})
        local.send(1, identities={"customer_id": "c1-moved"})  # already another user's: c1 stays with 1
        local.clock.advance(3_000)
        drive(runner)
        assert _seen(partner) == [first]  # nothing changed for user 1
    finally:
        runner.close()


def test_a_scan_that_finds_nothing_to_send_leaves_a_deferred_acknowledgement_for_the_next_batch(
    local: Local, partner: Partner
) -> None:
    """The scan's new mark waits for the connection's next write instead of writing the streamed
    batch's acknowledgement on its own; both are written once the next batch is marked in flight."""
    out = _hook(local, partner, accepted_identities=["customer_id"])
    local.send(1, "gold", {"customer_id": "c1"})
    cid = local.connect(out)
    runner = local.runner(replace(SETTINGS, ack_delay_s=60.0))
    try:
        drive(runner)  # the synchronisation: written at once
        local.clock.advance(1_000)
        local.send(2, "gold", {"customer_id": "c2"})
        drive(runner)  # streamed: its acknowledgement waits for the next write
        assert _seen(partner)[1:] == [(2, "add", {"customer_id": "c2"})]
        store = runner.workers[cid].store
        assert store.pending_since() is not None
        local.send(1, identities={"customer_id": "c1", "email": "e1@example.com"})  # not accepted
        local.clock.advance(3_000)
        drive(runner)  # the scan finds member 1, with nothing to send
        assert len(partner.accepted("/h")) == 2
        assert store.pending_since() is not None and runner.stats(cid, local.audience)["sent"] == 1
        mark = runner.workers[cid].state.identities_at
        local.send(3, "gold", {"customer_id": "c3"})
        drive(runner)
        assert _seen(partner)[2:] == [(3, "add", {"customer_id": "c3"})]
        stored = store.load(cid)
        assert stored.sent == 2 and stored.identities_at is not None and stored.identities_at >= mark
    finally:
        runner.close()
