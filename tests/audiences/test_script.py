"""Statements held for one call into DuckDB (`audiences.statements.Script`)."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from tests.audiences.test_engine import World, attr, journey, ms

from milepost.audiences.statements import Script, Statements


class Counting:
    """A connection that counts the calls made into it (each one gives up and retakes the GIL)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.calls: list[str] = []

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        self.calls.append(sql)
        return self.con.execute(sql) if params is None else self.con.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_held_statements_run_in_order_with_the_next_read_in_one_call() -> None:
    con = Counting(duckdb.connect())
    script = Script(con)  # type: ignore[arg-type]
    script.later("CREATE TEMP TABLE t (a INT)", "INSERT INTO t VALUES (1)")
    script.later("INSERT INTO t SELECT max(a) + 1 FROM t")
    assert con.calls == []  # nothing sent yet
    assert script.run("SELECT list(a ORDER BY a) FROM t") == [([1, 2],)]
    assert len(con.calls) == 1
    # With parameters, the held statements go first, in a call of their own.
    script.later("INSERT INTO t VALUES (5)")
    assert script.run("SELECT count(*) FROM t WHERE a < ?", [3]) == [(2,)]
    assert script.run("SELECT count(*) FROM t") == [(3,)]
    assert len(con.calls) == 4


def test_a_failed_statement_fails_the_call_and_rolls_back_what_was_held() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INT)")
    script = Script(con)
    script.begin()
    script.later("INSERT INTO t VALUES (1)", "INSERT INTO missing VALUES (2)")
    with pytest.raises(duckdb.CatalogException):
        script.flush()
    script.rollback()
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_a_rollback_before_anything_was_sent_sends_nothing_to_roll_back() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INT)")
    script = Script(con)
    script.begin()
    script.later("INSERT INTO t VALUES (1)")
    script.rollback()  # the transaction never began
    script.flush()  # and nothing is left to run
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_a_real_time_evaluation_sends_its_statements_in_few_calls(world: World) -> None:
    """A scoped evaluation of a journey with siblings, a remaining split and a child: its thirty
    statements or so reach DuckDB in a handful of calls, and its results are those of running
    each statement on its own."""
    tree = journey(
        ms(1, 101, attr("ltv", "greater_than", 1000), pos=0),
        ms(2, 102, attr("ltv", "greater_than", 100), pos=1),
        ms(3, 103, None, pos=2),
        ms(4, 104, attr("email_ok", "equals", True), parent=3),
    )
    world.engine.configure([tree], {})
    world.send({"mpid": 1, "user_attributes": {"ltv": 5000}}, {"mpid": 2, "user_attributes": {"ltv": 500}})
    world.engine.realtime()
    counting = Counting(world.engine.con)
    world.engine._script.con = counting  # type: ignore[assignment]
    world.clock.advance(1000)
    world.send(
        {"mpid": 1, "user_attributes": {"ltv": 50}}, {"mpid": 3, "user_attributes": {"email_ok": True}}
    )
    result = world.engine.realtime()
    statements = sum(len(duckdb.extract_statements(c)) for c in counting.calls)
    assert result.adds and result.removes
    assert statements >= 3 * len(counting.calls)
    assert [world.engine.members(a) for a in (101, 102, 103, 104)] == [[], [2], [1, 3], [3]]


def test_statements_forgotten_after_a_failed_script_run_again() -> None:
    """A script that fails before its `PREPARE` ran leaves the name unprepared: after `reset` the
    text is run (and prepared) again instead of failing at every `EXECUTE`."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 1 AS a")
    statements, script = Statements(), Script(con)
    query = "SELECT count(*) FROM t"
    assert script.run(";\n".join(statements.script(query))) == [(1,)]  # seen once
    *before, last = statements.script(query)  # the second time: PREPARE, then EXECUTE
    script.later("INSERT INTO missing VALUES (1)", *before)
    with pytest.raises(duckdb.CatalogException):
        script.run(last)
    with pytest.raises(duckdb.Error):
        statements.run(con, query)  # its name was never prepared
    statements.reset(con)
    for _ in range(3):
        assert statements.run(con, query) == [(1,)]
    assert statements.prepared() == [query]


def test_an_evaluation_failing_in_a_call_that_prepares_leaves_the_next_one_working(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = journey(ms(1, 101, attr("ltv", "greater_than", 100), pos=0), ms(2, 102, None, pos=1))
    world.engine.configure([tree], {})
    world.send({"mpid": 1, "user_attributes": {"ltv": 500}})
    world.engine.realtime()  # each statement's text seen once: the next evaluation prepares them
    real_run = Script.run
    failed: list[str] = []

    def failing(self: Script, sql: str, params: Any = None) -> list[Any]:
        if not failed and any(s.startswith("PREPARE") for s in self._held):
            failed.append(sql)
            self._held.insert(0, "INSERT INTO missing VALUES (1)")  # fails before the PREPARE
        return real_run(self, sql, params)

    monkeypatch.setattr(Script, "run", failing)
    world.clock.advance(1000)
    world.send({"mpid": 1, "user_attributes": {"ltv": 5}}, {"mpid": 2, "user_attributes": {"ltv": 900}})
    with pytest.raises(duckdb.CatalogException):
        world.engine.realtime()
    assert failed
    assert world.engine.members(101) == [1]  # rolled back
    result = world.engine.realtime()  # the same batches again, prepared afresh
    assert (result.adds, result.removes) == (2, 1)
    assert [world.engine.members(a) for a in (101, 102)] == [[2], [1]]
