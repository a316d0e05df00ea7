"""Write transactions on a delivery worker's store connection: retried when a concurrent writer
touched the same rows, and run again replacing when a row they add is there already."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

T = TypeVar("T")


def retrying(work: Callable[[], T], attempts: int = 20) -> T:
    """Run a write transaction again when a concurrent writer touched the same rows."""
    for n in range(attempts):
        try:
            return work()
        except duckdb.TransactionException:
            if n == attempts - 1:
                raise
            time.sleep(0.01 * (n + 1))
    raise AssertionError("unreachable")


def transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], None]) -> None:
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        work()
        con.execute("COMMIT").fetchall()
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise


def write(con: duckdb.DuckDBPyConnection, work: Callable[[], None]) -> None:
    """`work` in one transaction, retried on a conflict with another writer."""
    retrying(lambda: transaction(con, work))


def write_adding(con: duckdb.DuckDBPyConnection, work: Callable[[bool], None]) -> None:
    """`work(replace)` in one transaction, retried on a conflict. Users are mostly new to
    `delivered` (a plain insert costs less than an upsert): `work(False)` first; an identity change
    re-adds one the partner has, and the transaction then runs again as `work(True)`, replacing."""

    def attempt() -> None:
        try:
            transaction(con, lambda: work(False))
        except duckdb.ConstraintException:
            transaction(con, lambda: work(True))

    retrying(attempt)
