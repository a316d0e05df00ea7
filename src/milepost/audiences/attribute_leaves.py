"""Criteria on user attributes alone, evaluated once per distinct attribute value instead of per user.

A compiled criterion that reads nothing of a user but attributes at paths (`READS`) gives the
same answer for every user with the same value(s) at those paths. Parsing each user's attribute
document several times per row is what costs; so the estimator keeps, per sample version and
path, each sampled user's value as a code into that path's distinct values, runs the very same
condition over the distinct values only, and maps the answer back to users with a NumPy lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from milepost.audiences.masks import Mask
from milepost.criteria.dialect import DUCKDB

DISTINCT_TABLE = "milepost_distinct_values"
Codes = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AttributeLeaf:
    paths: tuple[str, ...]
    sql: str  # `SELECT code FROM <DISTINCT_TABLE> WHERE <the criterion on v0, v1, ...>`


@dataclass(frozen=True)
class PathValues:
    codes: Codes  # per sampled user (index order): row of `values`
    values: pa.Array  # distinct JSON texts, null (path absent) included


# The reads of an attribute at a path a criterion compiles to (by function name), each with the
# same read of that path's value (as JSON): the path's value is what reading through the path finds.
READS: dict[str, Callable[[exp.Expr], exp.Expr]] = {
    "json_extract": lambda v: v,
    "json_type": DUCKDB.json_type,
    "json_extract_string": DUCKDB.json_text,
}


def _extracted_path(node: exp.Expression, alias: str) -> tuple[str, str] | None:
    """(path, the read of `READS`) of `<read>(<alias>.attributes, '<path>')`, else None."""
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in READS:
        read, args = str(node.this).lower(), node.expressions
    elif isinstance(node, exp.JSONExtract):
        read, args = "json_extract", [node.this, node.expression]
    else:
        return None
    if len(args) != 2:
        return None
    column, path = args
    if not (isinstance(column, exp.Column) and column.name == "attributes" and column.table == alias):
        return None
    if not (isinstance(path, exp.Literal) and path.is_string):
        return None
    return str(path.this), read


def attribute_leaf(query: exp.Select, sql: str) -> AttributeLeaf | None:
    """The distinct-value plan of `SELECT <u>.mpid FROM users AS <u> WHERE <attributes only>` (`sql`
    is its text), or None when the criterion reads anything else."""
    if set(k for k, v in query.args.items() if v) != {"expressions", "from_", "where"}:
        return None
    source = query.args["from_"].this
    if not (isinstance(source, exp.Table) and source.name == "users" and not source.args.get("db")):
        return None
    alias = source.alias_or_name
    prefix = f"SELECT {alias}.mpid FROM users AS {alias} WHERE "
    if not sql.startswith(prefix):
        return None
    where = query.args["where"].this
    if any(isinstance(n, (exp.Subquery, exp.Exists, exp.Select)) for n in where.find_all(exp.Expression)):
        return None
    extractions: dict[str, tuple[str, str]] = {}  # the text of each read -> its path and kind
    for column in where.find_all(exp.Column):
        call = column.parent
        found = _extracted_path(call, alias) if call is not None else None
        if found is None:
            return None  # reads something of the user other than an attribute
        extractions.setdefault(call.sql(dialect="duckdb"), found)
    if not extractions:
        return None
    paths = tuple(dict.fromkeys(path for path, _ in extractions.values()))
    cond = sql[len(prefix) :]
    for text, (path, read) in sorted(extractions.items(), key=lambda e: -len(e[0])):
        # A SQL string literal cannot hold this text: its quotes would be doubled.
        value = exp.cast(
            exp.column(f"v{paths.index(path)}", table="d"), exp.DataType.build("JSON", dialect="duckdb")
        )
        cond = cond.replace(text, READS[read](value).sql(dialect="duckdb"))
    if re.search(rf"\b{re.escape(alias)}\.", cond):  # an extraction whose text did not match
        return None
    return AttributeLeaf(paths, f"SELECT d.code FROM {DISTINCT_TABLE} AS d WHERE {cond}")


def path_values(users: pa.Table, positions: npt.NDArray[np.intp], size: int) -> PathValues:
    """Codes per sampled user from a `(mpid, v)` table whose row r is the user at `positions[r]`."""
    encoded = pc.dictionary_encode(users.column("v").combine_chunks())
    values = pa.concat_arrays([encoded.dictionary, pa.array([None], pa.string())])
    absent = len(values) - 1
    codes = np.full(size, absent, dtype=np.int64)
    codes[positions] = encoded.indices.fill_null(absent).to_numpy(zero_copy_only=False)
    return PathValues(codes, values)


def updated_values(
    found: PathValues,
    moved: npt.NDArray[np.intp] | None,
    size: int,
    users: pa.Table,
    rows: npt.NDArray[np.intp],
) -> PathValues:
    """`found` carried to a new index (`moved`: each old row's new row, -1 when gone; None: the same
    rows), with the users of `users` (`v`; its row r is the user at `rows[r]`) coded again."""
    absent = len(found.values) - 1
    encoded = pc.dictionary_encode(users.column("v").combine_chunks())
    known = pc.index_in(encoded.dictionary, value_set=found.values.slice(0, absent))
    new = encoded.dictionary.filter(pc.is_null(known))
    values = pa.concat_arrays(
        [found.values.slice(0, absent), new.cast(found.values.type), found.values.slice(absent)]
    )
    now_absent = len(values) - 1
    mapping = np.asarray(known.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    unknown = mapping < 0
    mapping[unknown] = absent + np.arange(int(np.count_nonzero(unknown)))
    codes = np.where(found.codes == absent, now_absent, found.codes)
    if moved is not None:
        carried = np.full(size, now_absent, dtype=np.int64)
        carried[moved[moved >= 0]] = codes[moved >= 0]
        codes = carried
    codes[rows] = np.append(mapping, now_absent)[
        encoded.indices.fill_null(len(mapping)).to_numpy(zero_copy_only=False)
    ]
    return PathValues(codes, values)


def distinct_table(columns: list[PathValues]) -> tuple[pa.Table, Codes]:
    """The distinct value combinations the users hold (`code`, `v0`, ...) and each user's row of it."""
    if len(columns) == 1:
        only = columns[0]
        table = pa.table({"code": pa.array(np.arange(len(only.values)), pa.int64()), "v0": only.values})
        return table, only.codes
    stacked = np.stack([c.codes for c in columns])
    combos, inverse = np.unique(stacked, axis=1, return_inverse=True)
    data: dict[str, pa.Array] = {"code": pa.array(np.arange(combos.shape[1]), pa.int64())}
    for i, c in enumerate(columns):
        data[f"v{i}"] = c.values.take(pa.array(combos[i]))
    return pa.table(data), np.asarray(inverse, dtype=np.int64).reshape(-1)


def users_mask(codes: Codes, chosen: npt.NDArray[np.int64], combos: int) -> Mask:
    lut = np.zeros(combos, dtype=np.bool_)
    lut[chosen] = True
    return lut[codes]
