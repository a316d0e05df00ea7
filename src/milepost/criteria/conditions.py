"""Operators of SPEC §4.2 over plain Python values: the reference semantics the SQL must reproduce.

A value is None (missing), a JSON value as sent (str, int, float, bool, list), or a Decimal for
typed numbers (commerce amounts, computed aggregates), which have no text form.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

from milepost.criteria import operators as ops
from milepost.criteria.model import Condition, Duration
from milepost.criteria.values import (
    DAY_MS,
    bool_of,
    day_start,
    epoch_ms_of,
    number_of,
    text_of,
    wildcard_match,
)


def _equals(v: object, lit: object) -> bool | None:
    """Equality with a literal: None when the value has no view of the literal's type."""
    if isinstance(lit, bool):
        b = bool_of(v)
        return None if b is None else b == lit
    if isinstance(lit, int | float):
        n = number_of(v)
        return None if n is None else n == float(lit)
    t = text_of(v)
    return None if t is None else t.lower() == str(lit).lower()


def _string(op: str, v: object, lit: str) -> bool:
    t = text_of(v)
    if t is None:
        return False
    t, low = t.lower(), lit.lower()
    if op == "contains":
        return low in t
    if op == "not_contains":
        return low not in t
    if op == "starts_with":
        return t.startswith(low)
    if op == "ends_with":
        return t.endswith(low)
    if op == "pattern":
        return wildcard_match(low, t)
    return re2.search("(?i)" + lit, text_of(v) or "") is not None


def _number(op: str, v: object, cond: Condition) -> bool:
    n = number_of(v)
    if n is None:
        return False
    if op == "between":
        assert cond.min is not None and cond.max is not None
        return float(cond.min) <= n <= float(cond.max)
    assert isinstance(cond.value, int | float)
    x = float(cond.value)
    return {
        "greater_than": n > x,
        "greater_or_equal": n >= x,
        "less_than": n < x,
        "less_or_equal": n <= x,
    }[op]


def _date(op: str, v: object, cond: Condition, now_ms: int) -> bool:
    ms = epoch_ms_of(v)
    if ms is None:
        return False
    if op in ops.RELATIVE:
        assert isinstance(cond.value, Duration)
        d = cond.value.ms
        return now_ms - d < ms <= now_ms if op == "within_last" else ms <= now_ms - d
    if op == "between_dates":
        assert cond.values is not None
        lo, hi = day_start(cond.values[0]), day_start(cond.values[1])
        assert lo is not None and hi is not None
        return lo <= ms < hi + DAY_MS
    start = day_start(cond.value)
    assert start is not None
    if op == "before":
        return ms < start
    if op == "after":
        return ms >= start
    return start <= ms < start + DAY_MS


def test_value(v: object, cond: Condition, now_ms: int) -> bool:
    """Does a single value (None = missing) pass the condition?"""
    op = cond.op
    if v is None:
        return op == "not_exists"
    if op in ops.PRESENCE:
        return op == "exists" or (op == "empty" and v in ("", []))
    if op in ops.LIST:
        elements = v if isinstance(v, list) else [v]
        lit = cond.value
        if op == "partial_match":
            assert isinstance(lit, str)
            return any(_string("contains", e, lit) for e in elements)
        found = any(_equals(e, lit) is True for e in elements)
        return found if op == "includes" else not found
    if isinstance(v, list):
        return False
    if op in ops.EQUALITY:
        eq = _equals(v, cond.value)
        return eq is not None and eq == (op == "equals")
    if op in ops.MEMBERSHIP:
        assert cond.values is not None
        if op == "in":
            return any(_equals(v, lit) is True for lit in cond.values)
        return all(_equals(v, lit) is False for lit in cond.values)
    if op in ops.STRING:
        assert isinstance(cond.value, str)
        return _string(op, v, cond.value)
    if op in ops.NUMBER:
        return _number(op, v, cond)
    return _date(op, v, cond, now_ms)


def test_any(values: list[object], cond: Condition, now_ms: int) -> bool:
    """A multi-valued source (devices, device ids, products): true when any value passes.

    `not_exists` is the exception: it holds when no value exists at all.
    """
    present = [v for v in values if v is not None]
    if cond.op == "not_exists":
        return not present
    return any(test_value(v, cond, now_ms) for v in present)


ValueGetter = Callable[[str], object]
