"""A `where` condition decided in NumPy over the attribute documents picks the very documents its SQL
picks: text equality on a top-level attribute, whatever the documents hold."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from milepost.audiences.event_leaves import _chosen, _text_equal_docs, _text_equality, _where_sql
from milepost.criteria import CompileContext
from milepost.criteria.model import Condition

DOCS = [
    None,
    "{}",
    '{"genre":"drama","minutes":90}',
    '{"genre":"Drama"}',
    '{"genre":"DRAMA "}',
    '{"genre":"news"}',
    '{"genre":null}',
    '{"genre":5}',
    '{"genre":"5"}',
    '{"genre":5.0}',
    '{"genre":true}',
    '{"genre":"true"}',
    '{"genre":"null"}',
    '{"genre":""}',
    '{"genre":["drama"]}',
    '{"genre":{"genre":"drama"}}',
    '{"genre":"dräma"}',
    '{"genre":"DRÄMA"}',
    '{"genre":"\\u0064rama"}',
    '{"genre":"\\"drama\\""}',
    '{"genre":"news","genre":"drama"}',
    '{"genre":"drama","genre":"news"}',
    '{"x":{"genre":"drama"}}',
    '{"x":{"genre":"news"},"genre":"drama"}',
    '{"Genre":"drama"}',
    '{"genre":"it\'s"}',
    '{"genre":"\u212a"}',  # KELVIN SIGN: lowers to an ASCII "k"
    '{"genre":"K"}',
    '{"genre":"\u0130"}',
    '{"genre" : "drama" }',
    '{"minutes":1,"genre":"sport"}',
    "[1]",
    '"drama"',
    "5",
    "null",
]
CONDITIONS = [
    Condition(attribute="genre", op="equals", value="drama"),
    Condition(attribute="genre", op="equals", value="Drama"),
    Condition(attribute="genre", op="equals", value="DRÄMA"),
    Condition(attribute="genre", op="equals", value="drama "),
    Condition(attribute="genre", op="in", values=("drama", "news")),
    Condition(attribute="genre", op="in", values=("sport",)),
    Condition(attribute="genre", op="in", values=("5", "true", "null")),
    Condition(attribute="genre", op="equals", value="it's"),
    Condition(attribute="genre", op="equals", value=""),
    Condition(attribute="genre", op="equals", value="k"),
    Condition(attribute="genre", op="equals", value="\u0130"),
    Condition(attribute="genre", op="equals", value='"drama"'),
    Condition(attribute="minutes", op="equals", value="90"),
]


def _docs() -> pa.Array:
    return pa.array(DOCS, pa.string())


def _sql_choice(con: duckdb.DuckDBPyConnection, docs: pa.Array, codes: np.ndarray, sql: str) -> set[int]:
    table = pa.table({"code": pa.array(codes, pa.int64()), "doc": docs.take(pa.array(codes, pa.int64()))})
    return {int(c) for c in _chosen(con, table, sql)}


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: f"{c.op}-{c.value or c.values}")
def test_text_equality_matches_the_sql(cond: Condition) -> None:
    con = duckdb.connect()
    docs = _docs()
    sql = _where_sql(CompileContext(now_ms=0, lookback_ms=0), cond, 0)
    equality = _text_equality(cond, sql)
    assert equality is not None
    passing, left = _text_equal_docs(docs, *equality)
    expected = _sql_choice(con, docs, np.arange(len(docs)), sql)
    decided = np.setdiff1d(np.arange(len(docs)), left)
    assert {int(i) for i in decided if passing[i]} == expected - set(left.tolist())
    assert not passing[left].any()
    # what `_where` makes of it: the SQL over the documents left, the rest decided here
    passing[list(_sql_choice(con, docs, left, sql))] = True
    assert set(np.flatnonzero(passing).tolist()) == expected
    # plain documents (NULL, no such key, ASCII text, JSON null) are decided here, not left to the SQL
    plain = {0, 1, 2, 3, 5, 6, 8, 11} if cond.attribute == "genre" else {0, 1, 3, 5, 6, 8, 11}
    assert plain <= set(decided.tolist())


def test_other_conditions_are_left_to_the_sql() -> None:
    ctx = CompileContext(now_ms=0, lookback_ms=0)
    for cond in [
        Condition(attribute="genre", op="not_equals", value="drama"),
        Condition(attribute="genre", op="equals", value=5),
        Condition(attribute="genre", op="in", values=("drama", 5)),
        Condition(attribute="genre", op="contains", value="dra"),
        Condition(attribute="genre", op="exists"),
        Condition(attribute="a.b", op="equals", value="drama"),
        Condition(attribute="g~1", op="equals", value="drama"),
    ]:
        assert _text_equality(cond, _where_sql(ctx, cond, 0)) is None, cond
