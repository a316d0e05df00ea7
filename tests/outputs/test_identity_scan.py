"""Shared identity scans: their windows end at one point per interval, and an answer given once is
the store's answer to the same question."""

from __future__ import annotations

import duckdb
import pytest

from milepost.outputs.identity_scan import IDENTITY_LAG_MS, IdentityScans
from milepost.outputs.state import DeliveryStore
from milepost.outputs.worker import MIN_MPID

pytestmark = pytest.mark.unit


def test_scans_of_one_interval_end_at_one_point() -> None:
    scans = IdentityScans(1.0)
    t = 10_000_000
    assert scans.upto(t) == t - IDENTITY_LAG_MS
    assert scans.upto(t + 999) == t - IDENTITY_LAG_MS
    assert scans.upto(t + 1000) == t + 1000 - IDENTITY_LAG_MS
    assert scans.upto(t) == t - IDENTITY_LAG_MS  # a clock set back: from there
    assert IdentityScans(0.0).upto(t + 1) == t + 1 - IDENTITY_LAG_MS  # no interval: every scan its own


def test_a_shared_answer_is_the_stores(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "INSERT INTO identities SELECT 'email', 'e' || m, m, 'e' || m, false, 100 + m % 7 "
        "FROM range(1, 40) t(m)"
    ).fetchall()
    store = DeliveryStore(con)
    scans = IdentityScans(1.0)
    for after, upto, limit in [((99, MIN_MPID), 104, 10), ((102, 9), 106, 5), ((99, MIN_MPID), 104, 10)]:
        first = scans.touched(store, after, upto, limit)
        assert first == store.identities_touched(after, upto, limit) != []
        assert scans.touched(store, after, upto, limit) is first  # asked once
