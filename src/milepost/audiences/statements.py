"""Long statements a connection runs again and again, parsed once.

A real-time evaluation runs the same compiled diff statements every time (7-14 kB of SQL each),
and DuckDB spent about 0.4 ms per kB parsing that text, every time. A statement seen a second time
is prepared (`PREPARE`) and from then on executed by name. DuckDB (2.0) binds and optimises a
prepared statement that reads a table again at every `EXECUTE`, whether or not anything changed
(with no table read its plan is kept), so the rows are those of running its text and only the
parse is saved: keeping the evaluation's scratch tables instead of replacing them saves no
binding. Text seen once is run as it is: preparing it would bind it twice.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
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
        name = self._names.get(sql)
        if name is not None:
            self._names.move_to_end(sql)
        elif sql not in self._seen:
            self._seen[sql] = None
            if len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            return con.execute(sql).fetchall()
        else:
            # Named per cache too: two on one connection never replace each other's statements.
            name = f"milepost_statement_{id(self):x}_{next(self._numbers)}"
            con.execute(f"PREPARE {name} AS {sql}").fetchall()
            del self._seen[sql]
            self._names[sql] = name
            if len(self._names) > self.limit:
                _, oldest = self._names.popitem(last=False)
                con.execute(f"DEALLOCATE {oldest}").fetchall()
        return con.execute(f"EXECUTE {name}").fetchall()

    def prepared(self) -> list[str]:
        """The texts prepared, least recently used first."""
        return list(self._names)
