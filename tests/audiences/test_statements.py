"""Prepared statements (`audiences.statements`) give the rows their text gives, whatever changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests.audiences.test_engine import DAY, World, attr, journey, ms
from tests.audiences.test_fused_timers import DAYS_3, DAYS_10, ev, last

from milepost.audiences.statements import Statements
from milepost.audiences.timer_sql import timers_sql

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


def test_a_prepared_statement_reads_new_rows_and_instants_without_any_ddl() -> None:
    """The steady state of a real-time evaluation: only rows written and `now` set between runs."""
    con = duckdb.connect()
    statements = Statements()
    con.execute("CREATE TEMP TABLE t AS SELECT 1 AS a")
    query = "SELECT count(*), min(a), getvariable('x') FROM t WHERE a > getvariable('x')"
    con.execute("SET VARIABLE x = 5")
    for _ in range(2):  # prepared on the second run
        assert statements.run(con, query) == [(0, None, 5)]
    con.execute("INSERT INTO t VALUES (10)")
    assert statements.run(con, query) == [(1, 10, 5)]
    con.execute("SET VARIABLE x = 0")
    assert statements.run(con, query) == [(2, 1, 0)]
    con.execute("DELETE FROM t WHERE a = 1")
    con.execute("SET VARIABLE x = 20")
    assert statements.run(con, query) == [(0, None, 20)]
    assert statements.prepared() == [query]


TIMED = journey(
    ms(1, 101, ev("watch", 2, last(7)), pos=0),
    ms(2, 102, {"all": [ev("watch", 1, last(5)), attr("signup", "within_last", DAYS_10)]}, pos=1),
    ms(3, 103, {"type": "last_seen", "op": "within_last", "value": DAYS_3}, pos=2),
    ms(4, 104, {"type": "parent_entry", "op": "more_than_ago", "value": DAYS_3}, parent=1),
)


def _watch(ts: int) -> dict[str, Any]:
    data = {"event_name": "watch", "custom_event_type": "media", "timestamp_unixtime_ms": ts}
    return {"event_type": "custom_event", "data": data}


def test_timers_are_written_by_one_text_at_every_instant(world: World) -> None:
    """The timers statement reads the evaluation's instant from the session variable: built once,
    parsed once, it writes the rows its text built at that instant (a literal `now`) writes."""
    world.engine.configure([TIMED], {})
    con = world.engine.con
    for step in range(4):
        now = world.clock.now_ms()
        world.send(
            {"mpid": 1 + step % 2, "events": [_watch(now - (step + 1) * DAY)]},
            {"mpid": 3, "user_attributes": {"signup": "2026-05-28T00:00:00Z"}},
        )
        world.engine.realtime()
        plan = world.engine._plan
        rows = con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall()
        literal = timers_sql(plan, now, world.engine.settings.lifetime_ms)
        assert literal is not None and str(now) in literal
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM timers")
        con.execute(literal)
        assert con.execute("SELECT mpid, due_at FROM timers ORDER BY mpid").fetchall() == rows
        con.execute("ROLLBACK")
        assert len(rows) >= 2  # users with a boundary ahead
        world.clock.advance(DAY // 2 + 1000)
    text = world.engine._timers.sql(plan, world.engine.settings.lifetime_ms)
    assert text is not None and text in world.engine._statements.prepared()
    assert str(now) not in text
