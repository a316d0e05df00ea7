"""Prepared statements (`audiences.statements`) give the rows their text gives, whatever changed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from tests.audiences.test_engine import World, attr, journey, ms

from milepost.audiences.statements import Statements

QUERY = "SELECT a, getvariable('x') AS x FROM t WHERE a > 5 ORDER BY a"


def test_a_prepared_statement_reads_what_changed_since_it_was_prepared() -> None:
    con = duckdb.connect()
    statements = Statements()
    con.execute("SET VARIABLE x = 1")
    con.execute("CREATE TEMP TABLE t AS SELECT 1 AS a")
    # A text is prepared on its second run. Statistics at that time would prove the filter empty:
    # a plan kept from then would miss every later row.
    assert statements.run(con, QUERY) == []
    assert statements.run(con, QUERY) == []
    assert statements.prepared() == [QUERY]
    changes = [
        "INSERT INTO t VALUES (10)",  # rows written
        "SET VARIABLE x = 2",  # the session variable set again
        "CREATE OR REPLACE TEMP TABLE t AS SELECT 7 AS a UNION ALL SELECT 3",  # the table replaced
        "BEGIN TRANSACTION",
        "INSERT INTO t VALUES (8)",  # within a transaction
    ]
    for change in changes:
        con.execute(change)
        assert statements.run(con, QUERY) == con.execute(QUERY).fetchall()
    assert statements.run(con, QUERY) == [(7, 2), (8, 2)]
    con.execute("ROLLBACK")
    assert statements.run(con, QUERY) == [(7, 2)]


def test_the_least_recently_used_statement_is_deallocated() -> None:
    con = duckdb.connect()
    statements = Statements(limit=2)
    texts = [f"SELECT {i} AS n" for i in range(3)]
    for text in texts:  # each prepared on its second run
        for _ in range(2):
            assert statements.run(con, text) == con.execute(text).fetchall()
    assert statements.prepared() == texts[1:]
    with pytest.raises(duckdb.Error):
        con.execute(f"EXECUTE milepost_statement_{id(statements):x}_0").fetchall()  # texts[0]'s, evicted
    assert statements.run(con, texts[0]) == [(0,)]


def test_real_time_evaluations_run_their_diffs_prepared_with_the_same_changes(
    world: World, tmp_path: Path
) -> None:
    """The same evaluations, with and without prepared diffs, leave the same memberships and log."""
    tree = journey(
        ms(1, 101, attr("ltv", "greater_than", 1000), pos=0),
        ms(2, 102, attr("ltv", "greater_than", 100), pos=1),
        ms(3, 103, None, pos=2),
        ms(4, 104, attr("email_ok", "equals", True), parent=3),
    )
    steps = [
        [{"mpid": 1, "user_attributes": {"ltv": 5000}}, {"mpid": 2, "user_attributes": {"ltv": 500}}],
        [{"mpid": 2, "user_attributes": {"ltv": 2000}}, {"mpid": 3, "user_attributes": {"email_ok": True}}],
        [{"mpid": 1, "user_attributes": {"ltv": 50}}, {"mpid": 3, "user_attributes": {"ltv": 200}}],
        [{"mpid": 2, "user_attributes": {"ltv": 5}}, {"mpid": 4, "user_attributes": {"email_ok": True}}],
    ]

    def run(w: World, prepared: bool) -> tuple[list[list[int]], list[tuple[int, int, str]]]:
        w.engine.configure([tree], {})
        if not prepared:
            w.engine._statements.limit = 0  # every text run as it is
        for batches in steps:
            w.clock.advance(1000)
            w.send(*batches)
            w.engine.realtime()
        assert bool(w.engine._statements.prepared()) == prepared
        return [w.engine.members(a) for a in (101, 102, 103, 104)], w.changes()

    plain_world = World(tmp_path / "plain")
    try:
        plain = run(plain_world, prepared=False)
    finally:
        plain_world.engine.con.close()
        plain_world.store.close()
    assert run(world, prepared=True) == plain
    assert plain[1]  # the steps changed memberships
