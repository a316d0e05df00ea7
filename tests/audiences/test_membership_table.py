"""The memberships table of a store written when it still had a key: opened without it, rows kept."""

from __future__ import annotations

from pathlib import Path

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore
from milepost.engines.duckdb_membership import MEMBERSHIP_KEYED

DAY = 86_400_000
T0 = 1_780_315_200_000


def test_a_keyed_memberships_table_is_rebuilt_without_its_key(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    con.execute(
        "CREATE TABLE memberships (audience_id BIGINT NOT NULL, mpid BIGINT NOT NULL, "
        "entered_at BIGINT NOT NULL, PRIMARY KEY (audience_id, mpid))"
    ).fetchall()
    con.execute("INSERT INTO memberships VALUES (101, 1, 5), (101, 2, 6), (102, 1, 7)").fetchall()
    assert con.execute(MEMBERSHIP_KEYED).fetchall()[0][0] == 1
    try:
        engine = AudienceEngine(con, ManualClock(T0), EngineSettings(90 * DAY, 90 * DAY))
        assert con.execute(MEMBERSHIP_KEYED).fetchall()[0][0] == 0
        rows = con.execute("SELECT * FROM memberships ORDER BY ALL").fetchall()
        assert rows == [(101, 1, 5), (101, 2, 6), (102, 1, 7)]
        # Opening it again changes nothing; the engine works on the rebuilt table.
        AudienceEngine(con, ManualClock(T0), EngineSettings(90 * DAY, 90 * DAY))
        assert con.execute("SELECT count(*) FROM memberships").fetchall()[0][0] == 3
        root = MilestoneRow(1, 1, None, 0, "all", 101, None, True)
        engine.configure([JourneyRows(1, "j", (1,), (root,))], {})
        result = engine.full_calculation()
        assert (result.adds, result.removes) == (0, 2)  # no profiles: the old members leave
        assert con.execute("SELECT count(*) FROM memberships").fetchall()[0][0] == 0
    finally:
        con.close()
        store.close()
