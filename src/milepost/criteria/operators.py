"""The operator table of SPEC §4.2 and the check that an operator applies to the value it is given."""

from __future__ import annotations

from typing import Any

import re2

from milepost.criteria.model import Duration
from milepost.criteria.values import day_start
from milepost.errors import InvalidCriteria

PRESENCE = frozenset({"exists", "not_exists", "empty"})
STRING = frozenset({"contains", "not_contains", "starts_with", "ends_with", "pattern", "matches"})
EQUALITY = frozenset({"equals", "not_equals"})
MEMBERSHIP = frozenset({"in", "not_in"})
NUMBER = frozenset({"greater_than", "greater_or_equal", "less_than", "less_or_equal", "between"})
# Date operators relative to `now`: the only operators whose test on a value reads it.
RELATIVE = frozenset({"within_last", "more_than_ago"})
DATE = frozenset({"before", "after", "on_date", "between_dates"}) | RELATIVE
LIST = frozenset({"includes", "not_includes", "partial_match"})
ALL_OPS = PRESENCE | STRING | EQUALITY | MEMBERSHIP | NUMBER | DATE | LIST

# Which kinds of operator a value source accepts, and which kinds of literal its equality takes.
KIND_ANY = "any"  # user and event attributes, calculated attributes
KIND_NUMBER = "number"  # predictions, total_amount, aggregates
KIND_TEXT = "text"  # identities, devices, commerce text fields
KIND_DATE = "date"  # first_seen / last_seen
KIND_IDENTITY = "identity"  # identities: text without number comparisons


def fail(path: str, message: str) -> InvalidCriteria:
    return InvalidCriteria(f"{path}: {message}" if path else message)


def join(path: str, field: str) -> str:
    if field.startswith("["):
        return path + field
    return f"{path}.{field}" if path else field


def describe(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean value"
    if isinstance(v, int | float):
        return "a number value"
    if isinstance(v, str):
        return "a string value"
    if isinstance(v, list):
        return "a list value"
    if v is None:
        return "a missing value"
    return "an object value"


def is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_scalar(v: object) -> bool:
    return isinstance(v, str | int | float)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def check_regex(pattern: str, path: str) -> None:
    """Reject anything RE2 cannot compile (look-around, back-references, syntax errors)."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise fail(path, f"not a valid RE2 regular expression: {detail}") from None


UNITS = ("minutes", "hours", "days", "weeks")


def parse_duration(raw: object, path: str) -> Duration:
    """`{"amount": N, "unit": ...}` with a positive integer amount."""
    if not isinstance(raw, dict):
        raise fail(path, 'expected a duration {"amount": N, "unit": "minutes|hours|days|weeks"}')
    for key in sorted(set(raw) - {"amount", "unit"}):
        raise fail(join(path, key), "unknown field")
    amount, unit = raw.get("amount"), raw.get("unit")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise fail(join(path, "amount"), f"expected a positive integer, got {amount!r}")
    if unit not in UNITS:
        raise fail(join(path, "unit"), f"unknown unit {unit!r} (minutes, hours, days, weeks)")
    return Duration(amount=amount, unit=unit)


def check_date(v: object, path: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int | str) or day_start(v) is None:
        raise fail(path, f"invalid date {v!r} (expected ISO-8601 or epoch milliseconds)")


def check_op_kind(op: object, kind: str, path: str, what: str) -> str:
    """Check the operator is known and applies to a source of this kind; returns it."""
    if not isinstance(op, str):
        raise fail(join(path, "op"), "missing operator")
    if op not in ALL_OPS:
        raise fail(join(path, "op"), f"unknown operator {op!r}")
    allowed = {
        KIND_ANY: ALL_OPS,
        KIND_NUMBER: PRESENCE - {"empty"} | EQUALITY | MEMBERSHIP | NUMBER,
        KIND_TEXT: PRESENCE | STRING | EQUALITY | MEMBERSHIP | NUMBER,
        KIND_DATE: DATE | {"exists", "not_exists"},
        KIND_IDENTITY: PRESENCE | STRING | EQUALITY | MEMBERSHIP,
    }[kind]
    if op not in allowed:
        raise fail(join(path, "op"), f"{op!r} does not apply to {what}")
    return op


def check_operands(raw: dict[str, Any], op: str, kind: str, path: str) -> dict[str, Any]:
    """Validate the operands of `op` and return them as Condition fields."""
    value = raw.get("value")
    values = raw.get("values")
    op_path = join(path, "op")
    extra = {k for k in ("value", "values", "min", "max") if k in raw}

    def doesnt_apply(v: object) -> InvalidCriteria:
        return fail(op_path, f"{op!r} does not apply to {describe(v)}")

    def only(*keys: str) -> None:
        for k in sorted(extra - set(keys)):
            raise fail(join(path, k), f"not used by {op!r}")
        for needed in keys:
            if needed not in raw:
                raise fail(join(path, needed), f"{op!r} needs {needed!r}")

    if op in PRESENCE:
        only()
        return {}
    if op in STRING or op == "partial_match":
        only("value")
        if not isinstance(value, str):
            raise doesnt_apply(value)
        if op == "matches":
            check_regex(value, join(path, "value"))
        return {"value": value}
    if op in EQUALITY or op in ("includes", "not_includes"):
        only("value")
        if not is_scalar(value):
            raise doesnt_apply(value)
        if kind == KIND_NUMBER and not is_num(value):
            raise doesnt_apply(value)
        if kind in (KIND_TEXT, KIND_IDENTITY) and isinstance(value, bool):
            raise doesnt_apply(value)
        return {"value": value}
    if op in MEMBERSHIP:
        only("values")
        if not isinstance(values, list):
            raise fail(join(path, "values"), f"{op!r} needs a list of values")
        for i, item in enumerate(values):
            if not is_scalar(item) or (kind == KIND_NUMBER and not is_num(item)):
                raise fail(join(path, f"values[{i}]"), f"{op!r} does not apply to {describe(item)}")
        return {"values": tuple(values)}
    if op == "between":
        only("min", "max")
        lo, hi = raw["min"], raw["max"]
        for key, v in (("min", lo), ("max", hi)):
            if not is_num(v):
                raise fail(join(path, key), f"'between' needs a number, got {describe(v)}")
        if lo > hi:
            raise fail(join(path, "min"), f"min ({lo}) is greater than max ({hi})")
        return {"min": lo, "max": hi}
    if op in NUMBER:
        only("value")
        if not is_num(value):
            raise doesnt_apply(value)
        return {"value": value}
    if op in RELATIVE:
        only("value")
        return {"value": parse_duration(value, join(path, "value"))}
    if op == "between_dates":
        only("values")
        if not isinstance(values, list) or len(values) != 2:
            raise fail(join(path, "values"), "'between_dates' needs two dates [D1, D2]")
        for i, d in enumerate(values):
            check_date(d, join(path, f"values[{i}]"))
        if (day_start(values[0]) or 0) > (day_start(values[1]) or 0):
            raise fail(join(path, "values"), "the first date is after the second")
        return {"values": tuple(values)}
    # before / after / on_date
    only("value")
    check_date(value, join(path, "value"))
    return {"value": value}
