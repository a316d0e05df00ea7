"""After a crash, the batch that was not acknowledged is sent again as it was: the same ids and the
same Idempotency-Key, even when more changes arrived meanwhile."""

from __future__ import annotations

import pytest
from tests.outputs.inprocess import Local, drive
from tests.outputs.partner import Partner

pytestmark = pytest.mark.unit


def test_the_unacknowledged_batch_is_resent_unchanged(local: Local) -> None:
    partner = Partner()
    try:
        partner.route("/h", default=500)
        out = local.runtime.catalog.create_output(
            "webhook", "hook", {"url": partner.url("/h"), "secret": "s", "batch_size": 3}
        )
        local.connect(out.id)
        local.send(1, "gold")
        runner = local.runner()
        drive(runner, steps=5)
        runner.close()  # a crash while the batch is not acknowledged
        first = partner.requests("/h")[0]
        assert [c["mpid"] for c in first.changes] == [1]

        local.send(2, "gold")
        local.send(3, "gold")
        partner.route("/h", default=200)
        runner = local.runner()
        try:
            drive(runner)
        finally:
            runner.close()
        accepted = [r for r in partner.requests("/h") if r.status == 200]
        assert [[c["mpid"] for c in r.changes] for r in accepted] == [[1], [2, 3]]
        assert accepted[0].headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
        assert [c["id"] for c in accepted[0].changes] == [c["id"] for c in first.changes]
    finally:
        partner.close()
