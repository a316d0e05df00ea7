"""SQL views of a value (text, number, boolean, date, list) and the operators of SPEC §4.2 over them.

Mirrors `conditions` clause by clause. Every view is NULL when the value has no such view, and
every compiled condition is two-valued (never NULL), so `NOT` behaves as in the reference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from milepost.criteria import operators as ops
from milepost.criteria.dialect import Dialect, lit
from milepost.criteria.model import Condition, Duration
from milepost.criteria.values import DAY_MS, ISO_PATTERN, NUMBER_PATTERN, day_start, wildcard_to_like

TRUE = exp.true()
FALSE = exp.false()


def _is_bool(e: exp.Expr, value: bool) -> bool:
    return isinstance(e, exp.Boolean) and e.this is value


def _distinct(items: tuple[exp.Expr, ...], unit: bool) -> list[exp.Expr]:
    """`items` less the neutral constant `unit` and repeats (sqlglot compares trees by value)."""
    kept: list[exp.Expr] = []
    for x in items:
        if not _is_bool(x, unit) and x not in kept:
            kept.append(x)
    return kept


def and_(*items: exp.Expr) -> exp.Expr:
    """Constants and repeats folded here, so the engine has less to bind and optimise."""
    kept = _distinct(items, True)
    if any(_is_bool(x, False) for x in kept):
        return FALSE
    return exp.and_(*kept) if len(kept) > 1 else kept[0] if kept else TRUE


def or_(*items: exp.Expr) -> exp.Expr:
    kept = _distinct(items, False)
    if any(_is_bool(x, True) for x in kept):
        return TRUE
    return exp.or_(*kept) if len(kept) > 1 else kept[0] if kept else FALSE


def not_(e: exp.Expr) -> exp.Expr:
    if isinstance(e, exp.Boolean):
        return exp.Boolean(this=not e.this)
    return exp.Not(this=e)


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or)


def never_null(e: exp.Expr) -> bool:
    """True when `e` cannot be NULL, judged from its form alone (False when unsure)."""
    if isinstance(e, exp.Boolean | exp.Literal | exp.Is | exp.Exists):
        return True
    if isinstance(e, exp.Not | exp.Paren | exp.Cast) and not isinstance(e, exp.TryCast):
        return never_null(e.this)
    if isinstance(e, exp.Coalesce):
        return any(never_null(x) for x in (e.this, *e.expressions))
    if isinstance(e, _COMPARISONS):
        return never_null(e.this) and never_null(e.expression)
    return False


def sure(e: exp.Expr) -> exp.Expr:
    """NULL becomes false."""
    if never_null(e):
        return e
    return exp.Coalesce(this=exp.Paren(this=e), expressions=[FALSE])


def null() -> exp.Expr:
    return exp.Null()


def case(cond: exp.Expr, then: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=then)], default=null())


@dataclass(frozen=True)
class SqlValue(ABC):
    """A possibly-missing value; subclasses say how each view is computed."""

    d: Dialect

    @abstractmethod
    def present(self) -> exp.Expr:
        """True when the value exists."""

    def is_list(self) -> exp.Expr:
        return FALSE

    def text(self) -> exp.Expr:
        return null()

    def number(self) -> exp.Expr:
        return null()

    def boolean(self) -> exp.Expr:
        return null()

    def epoch_ms(self) -> exp.Expr:
        return null()

    def is_empty(self) -> exp.Expr:
        return FALSE

    def decimal(self) -> exp.Expr:
        """The exact numeric view summed by `sum`."""
        return null()

    def key(self) -> exp.Expr:
        """What `distinct` and `unique_*` compare (see values.distinct_key)."""
        return self.d.lower(self.text())

    def any_element(self, pred: Callable[[SqlValue], exp.Expr]) -> exp.Expr:
        """Some element passes; a scalar is a one-element list."""
        return pred(self)


def _text_number(d: Dialect, s: exp.Expr) -> exp.Expr:
    return case(d.full_match(s, NUMBER_PATTERN), d.try_cast(s, "DOUBLE"))


def _text_bool(d: Dialect, s: exp.Expr) -> exp.Expr:
    low = d.lower(s)
    return case(
        exp.In(this=low, expressions=[lit("true"), lit("false")]), exp.EQ(this=low, expression=lit("true"))
    )


def _text_date(d: Dialect, s: exp.Expr) -> exp.Expr:
    return case(d.full_match(s, ISO_PATTERN), d.iso_epoch_ms(s))


@dataclass(frozen=True)
class StringValue(SqlValue):
    s: exp.Expr

    def present(self) -> exp.Expr:
        return exp.Not(this=exp.Is(this=self.s, expression=null()))

    def text(self) -> exp.Expr:
        return self.s

    def number(self) -> exp.Expr:
        return _text_number(self.d, self.s)

    def boolean(self) -> exp.Expr:
        return _text_bool(self.d, self.s)

    def epoch_ms(self) -> exp.Expr:
        return _text_date(self.d, self.s)

    def is_empty(self) -> exp.Expr:
        return exp.EQ(this=self.s, expression=lit(""))

    def decimal(self) -> exp.Expr:
        return case(self.d.full_match(self.s, NUMBER_PATTERN), self.d.try_cast(self.s, self.d.decimal_type()))


@dataclass(frozen=True)
class NumberValue(SqlValue):
    """A typed number (amount, aggregate, timestamp): no text form."""

    n: exp.Expr

    def present(self) -> exp.Expr:
        return TRUE if never_null(self.n) else exp.Not(this=exp.Is(this=self.n, expression=null()))

    def number(self) -> exp.Expr:
        return self.d.cast(self.n, "DOUBLE")

    def epoch_ms(self) -> exp.Expr:
        return self.d.floor_bigint(self.d.cast(self.n, "DOUBLE"))

    def decimal(self) -> exp.Expr:
        return self.d.cast(self.n, self.d.decimal_type())

    def key(self) -> exp.Expr:
        return self.d.cast(self.decimal(), "VARCHAR")


@dataclass(frozen=True)
class ListValue(SqlValue):
    """A list of strings (a calculated `unique_list`)."""

    items: exp.Expr

    def present(self) -> exp.Expr:
        return exp.Not(this=exp.Is(this=self.items, expression=null()))

    def is_list(self) -> exp.Expr:
        return TRUE

    def is_empty(self) -> exp.Expr:
        return exp.EQ(this=self.d.list_length(self.items), expression=lit(0))

    def any_element(self, pred: Callable[[SqlValue], exp.Expr]) -> exp.Expr:
        return self.d.exists_element(self.items, "_el", lambda x: pred(StringValue(self.d, x)))


@dataclass(frozen=True)
class JsonValue(SqlValue):
    """A JSON value as sent (attribute, product field); JSON null is missing."""

    j: exp.Expr

    def _type(self) -> exp.Expr:
        return self.d.json_type(self.j)

    def _type_in(self, *names: str) -> exp.Expr:
        return exp.In(this=self._type(), expressions=[lit(n) for n in names])

    def _scalar(self) -> exp.Expr:
        d = self.d
        return self._type_in(*d.json_numeric_types, d.json_string_type, d.json_bool_type)

    def _raw_text(self) -> exp.Expr:
        return self.d.json_text(self.j)

    def present(self) -> exp.Expr:
        return and_(
            exp.Not(this=exp.Is(this=self.j, expression=null())),
            exp.NEQ(this=self._type(), expression=lit(self.d.json_null_type)),
        )

    def is_list(self) -> exp.Expr:
        return exp.EQ(this=self._type(), expression=lit(self.d.json_array_type))

    def text(self) -> exp.Expr:
        return case(self._scalar(), self._raw_text())

    def _is_string(self) -> exp.Expr:
        return exp.EQ(this=self._type(), expression=lit(self.d.json_string_type))

    def number(self) -> exp.Expr:
        d = self.d
        return exp.Case(
            ifs=[
                exp.If(this=self._type_in(*d.json_numeric_types), true=d.cast(self._raw_text(), "DOUBLE")),
                exp.If(this=self._is_string(), true=_text_number(d, self._raw_text())),
            ],
            default=null(),
        )

    def boolean(self) -> exp.Expr:
        d = self.d
        return exp.Case(
            ifs=[
                exp.If(this=self._type_in(d.json_bool_type), true=d.cast(self._raw_text(), "BOOLEAN")),
                exp.If(this=self._is_string(), true=_text_bool(d, self._raw_text())),
            ],
            default=null(),
        )

    def epoch_ms(self) -> exp.Expr:
        d = self.d
        return exp.Case(
            ifs=[
                exp.If(
                    this=self._type_in(*d.json_numeric_types),
                    true=d.floor_bigint(d.cast(self._raw_text(), "DOUBLE")),
                ),
                exp.If(this=self._is_string(), true=_text_date(d, self._raw_text())),
            ],
            default=null(),
        )

    def decimal(self) -> exp.Expr:
        d = self.d
        num = or_(
            self._type_in(*d.json_numeric_types),
            and_(self._is_string(), d.full_match(self._raw_text(), NUMBER_PATTERN)),
        )
        return case(num, d.try_cast(self._raw_text(), d.decimal_type()))

    def is_empty(self) -> exp.Expr:
        empty_string = and_(self._is_string(), exp.EQ(this=self._raw_text(), expression=lit("")))
        empty_list = and_(self.is_list(), exp.EQ(this=self.d.json_array_length(self.j), expression=lit(0)))
        return or_(empty_string, empty_list)

    def any_element(self, pred: Callable[[SqlValue], exp.Expr]) -> exp.Expr:
        elements = self.d.json_elements(self.j)
        found = self.d.exists_element(elements, "_el", lambda x: pred(JsonValue(self.d, x)))
        return exp.Case(ifs=[exp.If(this=self.is_list(), true=found)], default=pred(self))


def _equals(v: SqlValue, value: object) -> exp.Expr:
    """Equality with a literal; NULL when the value has no view of the literal's type."""
    if isinstance(value, bool):
        return exp.EQ(this=v.boolean(), expression=exp.Boolean(this=value))
    if isinstance(value, int | float):
        return exp.EQ(this=v.number(), expression=lit(float(value)))
    return exp.EQ(this=v.d.lower(v.text()), expression=lit(str(value).lower()))


def _not_equals(v: SqlValue, value: object) -> exp.Expr:
    return exp.Not(this=exp.Paren(this=_equals(v, value)))


def _string(op: str, v: SqlValue, value: str) -> exp.Expr:
    d = v.d
    t, low = d.lower(v.text()), value.lower()
    if op == "contains":
        return d.contains(t, low)
    if op == "not_contains":
        return exp.Not(this=d.contains(t, low))
    if op == "starts_with":
        return d.starts_with(t, low)
    if op == "ends_with":
        return d.ends_with(t, low)
    if op == "pattern":
        return d.like(t, wildcard_to_like(low))
    return d.search_ci(v.text(), value)


def _number(op: str, v: SqlValue, cond: Condition) -> exp.Expr:
    n = v.number()
    if op == "between":
        assert cond.min is not None and cond.max is not None
        return exp.Between(this=n, low=lit(float(cond.min)), high=lit(float(cond.max)))
    assert isinstance(cond.value, int | float)
    cls = {
        "greater_than": exp.GT,
        "greater_or_equal": exp.GTE,
        "less_than": exp.LT,
        "less_or_equal": exp.LTE,
    }[op]
    return cls(this=n, expression=lit(float(cond.value)))


Instant = int | exp.Expr  # the evaluation instant: epoch ms, or an expression bound per evaluation


def before(now: Instant, ms: int = 0) -> exp.Expr:
    """`now - ms` in SQL: a literal, or arithmetic on the bound instant (one query for every `now`)."""
    if isinstance(now, int):
        return lit(now - ms)
    if not ms:
        return now.copy()
    return exp.Paren(this=exp.Sub(this=now.copy(), expression=lit(ms)))


def next_boundary(ts: exp.Expr, durations: list[int], now: Instant) -> exp.Expr:
    """The next instant after `now` at which an event at `ts` crosses one of `durations`: its time
    plus the shortest duration taking it past now (t + d grows with d); NULL when none does. One
    CASE per row, so that a user's next boundary is one minimum, not one filtered minimum per d."""
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.GT(this=ts.copy(), expression=before(now, d)),
                true=exp.Add(this=ts.copy(), expression=lit(d)),
            )
            for d in sorted(durations)
        ]
    )


def _date(op: str, v: SqlValue, cond: Condition, now_ms: Instant) -> exp.Expr:
    ms = v.epoch_ms()
    if op in ops.RELATIVE:
        assert isinstance(cond.value, Duration)
        bound = before(now_ms, cond.value.ms)
        if op == "more_than_ago":
            return exp.LTE(this=ms, expression=bound)
        return and_(exp.GT(this=ms, expression=bound), exp.LTE(this=ms.copy(), expression=before(now_ms)))
    if op == "between_dates":
        assert cond.values is not None
        lo, hi = day_start(cond.values[0]), day_start(cond.values[1])
    else:
        lo = hi = day_start(cond.value)
    assert lo is not None and hi is not None
    if op == "before":
        return exp.LT(this=ms, expression=lit(lo))
    if op == "after":
        return exp.GTE(this=ms, expression=lit(lo))
    return and_(exp.GTE(this=ms, expression=lit(lo)), exp.LT(this=ms.copy(), expression=lit(hi + DAY_MS)))


def _text_equals_any(v: SqlValue, values: list[object]) -> exp.Expr | None:
    """`equals`/`in` text literals on a JSON value, as one read of its text (no type tests, each
    of which parses the value again); None: no shortcut.

    A missing value and JSON null have no text, so never pass; a list's or object's text is its
    JSON, which no literal compared here can equal (none starts with `[` or `{`)."""
    if not (isinstance(v, JsonValue) and v.d.container_text_is_json):
        return None
    if not values or not all(isinstance(x, str) and x[:1] not in ("[", "{") for x in values):
        return None
    low = v.d.lower(v._raw_text())
    return sure(or_(*(exp.EQ(this=low.copy(), expression=lit(str(x).lower())) for x in values)))


def test_value(v: SqlValue, cond: Condition, now_ms: Instant) -> exp.Expr:
    """A two-valued SQL condition: does the value pass?"""
    op = cond.op
    if op in ("equals", "in"):
        quick = _text_equals_any(v, [cond.value] if op == "equals" else list(cond.values or ()))
        if quick is not None:
            return quick
    if op == "not_exists":
        return not_(sure(v.present()))
    if op == "exists":
        return sure(v.present())
    if op == "empty":
        return sure(and_(v.present(), v.is_empty()))
    if op in ops.LIST:
        if op == "partial_match":
            assert isinstance(cond.value, str)
            needle = cond.value
            return sure(and_(v.present(), v.any_element(lambda e: sure(_string("contains", e, needle)))))
        found = v.any_element(lambda e: sure(_equals(e, cond.value)))
        if op == "includes":
            return sure(and_(v.present(), found))
        return sure(and_(v.present(), not_(sure(found))))
    if op in ops.EQUALITY:
        e = _equals(v, cond.value) if op == "equals" else _not_equals(v, cond.value)
    elif op in ops.MEMBERSHIP:
        assert cond.values is not None
        if op == "in":
            e = or_(*(sure(_equals(v, x)) for x in cond.values))
        else:
            e = and_(*(sure(_not_equals(v, x)) for x in cond.values))
    elif op in ops.STRING:
        assert isinstance(cond.value, str)
        e = _string(op, v, cond.value)
    elif op in ops.NUMBER:
        e = _number(op, v, cond)
    else:
        e = _date(op, v, cond, now_ms)
    return sure(and_(v.present(), not_(sure(v.is_list())), e))
