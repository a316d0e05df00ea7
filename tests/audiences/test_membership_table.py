"""The memberships table of a store written when it still had a key: opened without it, rows kept."""

from __future__ import annotations

from pathlib import Path

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore
from milepost.engines.duckdb_membership import LOG_AS_TEXT, MEMBERSHIP_KEYED

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


def test_a_change_log_with_text_columns_is_converted_to_enums(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    con.execute(
        "CREATE TABLE membership_changes (seq BIGINT NOT NULL, audience_id BIGINT NOT NULL, mpid BIGINT NOT NULL, "
        "action VARCHAR NOT NULL, changed_at BIGINT NOT NULL, cause VARCHAR NOT NULL, recorded_at BIGINT NOT NULL)"
    ).fetchall()
    con.execute(
        "INSERT INTO membership_changes VALUES (1, 101, 1, 'add', 5, 'ingest', 5), (2, 101, 1, 'remove', 6, 'timer', 7)"
    ).fetchall()
    assert con.execute(LOG_AS_TEXT).fetchall()[0][0] == 2
    try:
        clock = ManualClock(T0)
        engine = AudienceEngine(con, clock, EngineSettings(90 * DAY, 90 * DAY))
        assert con.execute(LOG_AS_TEXT).fetchall()[0][0] == 0
        types = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'membership_changes' "
            "AND column_name IN ('action', 'cause') ORDER BY ALL"
        ).fetchall()
        assert types == [
            ("action", "ENUM('add', 'remove')"),
            ("cause", "ENUM('ingest', 'timer', 'full', 'calculation', 'edit', 'preview')"),
        ]
        log = "SELECT seq, mpid, action, cause FROM membership_changes ORDER BY seq"
        assert con.execute(log).fetchall() == [(1, 1, "add", "ingest"), (2, 1, "remove", "timer")]
        # Opening it again changes nothing; the engine appends to the converted log, and readers
        # compare and group the columns as text.
        AudienceEngine(con, clock, EngineSettings(90 * DAY, 90 * DAY))
        con.execute("INSERT INTO users VALUES (7, ?, ?, ?, [1], '{}', ?)", [T0, T0, T0, T0]).fetchall()
        root = MilestoneRow(1, 1, None, 0, "all", 101, None, True)
        engine.configure([JourneyRows(1, "j", (1,), (root,))], {})
        assert engine.full_calculation().adds == 1
        assert con.execute(log).fetchall()[-1] == (3, 7, "add", "full")
        assert con.execute(
            "SELECT count(*) FILTER (WHERE action = 'add'), count(*) FILTER (WHERE cause = 'timer') FROM membership_changes"
        ).fetchall() == [(2, 1)]
    finally:
        con.close()
        store.close()
