"""SQL for event attributes and calculated attributes (SPEC §4.5), compiled inline from their definition."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlglot import exp

from milepost.criteria import core
from milepost.criteria.dialect import Dialect, lit
from milepost.criteria.model import CalculatedAttribute
from milepost.criteria.sqlvalues import JsonValue, ListValue, NumberValue, SqlValue, StringValue, and_, sure

if TYPE_CHECKING:
    from milepost.criteria.compile import Compiler

TEXT_COLUMNS = ("transaction_id", "currency_code", "coupon_code")
ValueOf = Callable[[exp.Expr], SqlValue]


def event_value_sql(d: Dialect, a: str, attribute: str) -> SqlValue:
    """An event attribute of row alias `a`: commerce columns by name, else a custom attribute."""
    if attribute == "total_amount":
        return NumberValue(d, exp.column("total_amount", table=a))
    if attribute in TEXT_COLUMNS:
        return StringValue(d, exp.column(attribute, table=a))
    return JsonValue(d, d.json_get(exp.column("attrs", table=a), attribute))


def _ranked(inner: exp.Select, partition: list[exp.Expr], order: list[exp.Ordered], alias: str) -> exp.Select:
    """Keep the first row per partition under `order` (a portable window function)."""
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=partition,
        order=exp.Order(expressions=order),
    )
    ranked = inner.select(rank.as_("rk"))
    return (
        exp.select("*").from_(ranked.subquery(alias)).where(exp.EQ(this=exp.column("rk"), expression=lit(1)))
    )


def _desc(e: exp.Expr) -> exp.Ordered:
    return exp.Ordered(this=e, desc=True)


def _asc(e: exp.Expr) -> exp.Ordered:
    return exp.Ordered(this=e, desc=False)


def calc_cte(c: Compiler, defn: CalculatedAttribute) -> tuple[str, ValueOf]:
    """A CTE `(mpid, v)` holding the attribute's value per user, and how to read `v`."""
    d, a, calc = c.d, "ca", defn.calculation
    mpid, ts, event_id = (
        exp.column("mpid", table=a),
        exp.column("ts", table=a),
        exp.column("event_id", table=a),
    )
    value = event_value_sql(d, a, defn.attribute) if defn.attribute else None
    filters = [
        c.leaf_filter(mpid),
        c.in_range(a, core.calc_range(defn)),
        c.selects(a, core.selector(defn.event, defn.where)),
    ]
    if value is not None:
        filters.append(sure(value.present()))
    if calc in ("most_frequent", "unique_list", "unique_count"):
        assert value is not None
        filters.append(exp.Not(this=exp.Is(this=value.key(), expression=exp.Null())))
    base = exp.select(mpid).from_(exp.to_table("events").as_(a)).where(and_(*filters))

    def zero(v: exp.Expr) -> exp.Expr:
        return exp.Coalesce(this=v, expressions=[lit(0)])

    reader: ValueOf
    if calc in ("count", "sum", "min", "max", "avg", "unique_count", "first_timestamp", "last_timestamp"):
        agg: exp.Expr
        if calc == "count":
            agg = exp.Count(this=exp.Star())
        elif calc == "sum":
            assert value is not None
            agg = exp.Sum(this=value.decimal())
        elif calc == "unique_count":
            assert value is not None
            agg = exp.Count(this=exp.Distinct(expressions=[value.key()]))
        elif calc in ("first_timestamp", "last_timestamp"):
            agg = exp.Min(this=ts) if calc == "first_timestamp" else exp.Max(this=ts)
        else:
            assert value is not None
            agg = {"min": exp.Min, "max": exp.Max, "avg": exp.Avg}[calc](this=value.number())
        body = base.select(agg.as_("v")).group_by(mpid.copy())
        zeroed = calc in ("count", "sum", "unique_count")
        reader = lambda v: NumberValue(d, zero(v) if zeroed else v)  # noqa: E731
    elif calc == "unique_list":
        assert value is not None
        body = base.select(d.list_sort(d.distinct_list(value.key())).as_("v")).group_by(mpid.copy())
        reader = lambda v: ListValue(d, exp.Coalesce(this=v, expressions=[d.empty_list()]))  # noqa: E731
    elif calc in ("first_value", "last_value"):
        assert value is not None and defn.attribute is not None
        raw = event_value_sql(d, a, defn.attribute)
        column = (
            raw.j if isinstance(raw, JsonValue) else raw.n if isinstance(raw, NumberValue) else raw.text()
        )
        order = [_asc(ts), _asc(event_id)] if calc == "first_value" else [_desc(ts), _desc(event_id)]
        inner = base.select(column.as_("v"))
        body = exp.select("mpid", "v").from_(_ranked(inner, [mpid.copy()], order, "fv").subquery("fv2"))
        reader = lambda v: type(raw)(d, v)  # type: ignore[call-arg]  # noqa: E731
    else:  # most_frequent: highest count, ties to the value seen most recently
        assert value is not None
        key = value.key()
        cnt = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[mpid.copy(), key.copy()])
        inner = base.select(key.as_("k"), ts.as_("lts"), event_id.as_("lid"), cnt.as_("cnt"))
        latest = _ranked(inner, [mpid.copy(), key.copy()], [_desc(ts.copy()), _desc(event_id.copy())], "mf")
        per_key = exp.select("mpid", "k", "cnt", "lts", "lid").from_(latest.subquery("mf2"))
        order = [_desc(exp.column(x)) for x in ("cnt", "lts", "lid")]
        top = _ranked(per_key, [exp.column("mpid")], order, "mf3")
        body = exp.select("mpid", exp.column("k").as_("v")).from_(top.subquery("mf4"))
        reader = lambda v: StringValue(d, v)  # noqa: E731
    return c.cte(("calc", defn), body), reader
