"""How the audience engine sends statements to DuckDB: long ones parsed once (`Statements`), and
those whose results nobody reads held and sent with the next one that is read (`Script`).

A real-time evaluation runs the same compiled diff statements every time (7-14 kB of SQL each),
and DuckDB spent about 0.4 ms per kB parsing that text, every time. A statement seen a second time
is prepared (`PREPARE`) and from then on executed by name. DuckDB (2.0) binds and optimises a
prepared statement that reads a table again at every `EXECUTE`, whether or not anything changed
(with no table read its plan is kept), so the rows are those of running its text and only the
parse is saved: keeping the evaluation's scratch tables instead of replacing them saves no
binding. Text seen once is run as it is: preparing it would bind it twice.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import duckdb


class Statements:
    """The prepared statements of one connection: the `limit` most recently used."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._names: OrderedDict[str, str] = OrderedDict()  # text -> prepared name
        self._seen: OrderedDict[str, None] = OrderedDict()  # texts run once, not prepared
        self._numbers = itertools.count()

    def run(self, con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
        """The rows of `sql`, a statement without parameters."""
        return con.execute(";\n".join(self.script(sql))).fetchall()

    def script(self, sql: str) -> list[str]:
        """The statements that run `sql` (without parameters) in its place, its rows last: its text
        the first time, then its prepared form. They may go in a script with other statements."""
        name = self._names.get(sql)
        if name is not None:
            self._names.move_to_end(sql)
            return [f"EXECUTE {name}"]
        if sql not in self._seen:
            self._seen[sql] = None
            if len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            return [sql]
        # Named per cache too: two on one connection never replace each other's statements.
        name = f"milepost_statement_{id(self):x}_{next(self._numbers)}"
        out = [f"PREPARE {name} AS {sql}", f"EXECUTE {name}"]
        del self._seen[sql]
        self._names[sql] = name
        if len(self._names) > self.limit:
            _, oldest = self._names.popitem(last=False)
            out.insert(0, f"DEALLOCATE {oldest}")
        return out

    def prepared(self) -> list[str]:
        """The texts prepared, least recently used first."""
        return list(self._names)

    def reset(self, con: duckdb.DuckDBPyConnection) -> None:
        """Forget every statement, after a script that held some of their `PREPARE`s failed: those
        may not have run, and their names would fail every later `EXECUTE`."""
        for name in self._names.values():
            with contextlib.suppress(duckdb.Error):  # not prepared after all
                con.execute(f"DEALLOCATE {name}").fetchall()
        self._names.clear()
        self._seen.clear()


class Script:
    """Statements whose results nobody reads, held until the next statement whose result is read,
    then sent to DuckDB with it in one call.

    Each call into DuckDB gives up the GIL and takes it back when the call returns; in a busy server
    (ingest's event loop and writer, fifty delivery threads) taking it back cost a real-time
    evaluation's trivial statements 10-60 ms each, most of its time. One call for several statements
    waits once.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._held: list[str] = []

    def later(self, *sql: str) -> None:
        """Run these statements (without parameters) before the next one whose result is read."""
        self._held += sql

    def run(self, sql: str, params: Sequence[object] | None = None) -> list[Any]:
        """The statements held, then `sql`; the rows of `sql`."""
        held, self._held = self._held, []
        if params is None:
            return self.con.execute(";\n".join([*held, sql])).fetchall()
        if held:
            self.con.execute(";\n".join(held)).fetchall()
        return self.con.execute(sql, params).fetchall()

    def flush(self) -> None:
        """Run the statements held."""
        held, self._held = self._held, []
        if held:
            self.con.execute(";\n".join(held)).fetchall()

    def begin(self) -> None:
        """Begin a transaction, with the next statements sent."""
        self.later("BEGIN TRANSACTION")

    def rollback(self) -> None:
        """Forget the statements held and roll the transaction back, if it began."""
        self._held = []
        # A script that failed to parse ran nothing, its BEGIN included: no transaction to end.
        with contextlib.suppress(duckdb.TransactionException):
            self.con.execute("ROLLBACK").fetchall()
