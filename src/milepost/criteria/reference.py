"""The reference evaluator: plain Python over one user's data, the oracle every engine is tested against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from milepost.criteria import core
from milepost.criteria.conditions import test_any, test_value
from milepost.criteria.model import CalculatedAttribute, Criteria
from milepost.criteria.values import decimal_of, distinct_key, number_of

TEXT_COLUMNS = ("transaction_id", "currency_code", "coupon_code")


@dataclass(frozen=True)
class Consent:
    consented: bool
    ts: int
    received_at: int


@dataclass(frozen=True)
class UserData:
    """One profile as the store holds it; `events` rows carry the columns of the `events` table."""

    mpid: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    identities: Mapping[str, str] = field(default_factory=dict)
    device_ids: Mapping[str, Sequence[str]] = field(default_factory=dict)
    consents: Mapping[tuple[str, str], Consent] = field(default_factory=dict)
    devices: Sequence[Mapping[str, str | None]] = ()
    first_seen: int | None = None
    last_seen: int | None = None
    events: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class EvalContext:
    now_ms: int
    lookback_ms: int
    input_ids: frozenset[int] | None = None  # None: every input
    memberships: Mapping[int, int] = field(default_factory=dict)  # audience id -> entered_at
    parent_entered_at: int | None = None
    calculated: Mapping[str, CalculatedAttribute] = field(default_factory=dict)


def evaluate(criteria: Criteria, user: UserData, ctx: EvalContext) -> bool:
    """Does the user match the criteria at `ctx.now_ms`?"""
    return evaluate_core(core.lower(criteria, ctx.calculated), user, ctx)


def evaluate_core(node: core.Node, user: UserData, ctx: EvalContext) -> bool:
    if isinstance(node, core.And):
        return all(evaluate_core(x, user, ctx) for x in node.items)
    if isinstance(node, core.Or):
        return any(evaluate_core(x, user, ctx) for x in node.items)
    if isinstance(node, core.Not):
        return not evaluate_core(node.item, user, ctx)
    if isinstance(node, core.ValueTest):
        return _value_test(node, user, ctx)
    if isinstance(node, core.ConsentTest):
        c = user.consents.get((node.regulation, node.purpose))
        return {
            "consented": c is not None and c.consented,
            "not_consented": c is not None and not c.consented,
            "present": c is not None,
            "not_present": c is None,
        }[node.state]
    if isinstance(node, core.EventTest):
        return _event_test(node, user, ctx)
    if isinstance(node, core.SequenceTest):
        return _sequence_test(node, user, ctx)
    if isinstance(node, core.MembershipTest):
        entered = ctx.memberships.get(node.audience_id)
        is_member = entered is not None and (node.min_ms is None or entered <= ctx.now_ms - node.min_ms)
        return is_member == node.member
    assert isinstance(node, core.ParentEntryTest)
    t = ctx.parent_entered_at
    if t is None:
        return False
    if node.op == "within_last":
        return ctx.now_ms - node.ms < t <= ctx.now_ms
    return t <= ctx.now_ms - node.ms


def _value_test(node: core.ValueTest, user: UserData, ctx: EvalContext) -> bool:
    now = ctx.now_ms
    if node.source == "attribute":
        return test_value(user.attributes.get(node.key), node.cond, now)
    if node.source == "identity":
        values: list[object] = [user.identities.get(node.key), *user.device_ids.get(node.key, ())]
        return test_any(values, node.cond, now)
    if node.source == "device":
        return test_any([d.get(node.key) for d in user.devices], node.cond, now)
    if node.source in ("first_seen", "last_seen"):
        seen = user.first_seen if node.source == "first_seen" else user.last_seen
        return test_value(None if seen is None else Decimal(seen), node.cond, now)
    assert node.calc is not None
    return test_value(calculated_value(node.calc, user, now), node.cond, now)


def event_value(row: Mapping[str, Any], attribute: str) -> object:
    """An event attribute as `where` and `having` see it (None = missing)."""
    if attribute == "total_amount":
        amount = row.get("total_amount")
        return None if amount is None else Decimal(amount)
    if attribute in TEXT_COLUMNS:
        return row.get(attribute)
    return (row.get("attrs") or {}).get(attribute)


def _where_ok(row: Mapping[str, Any], sel: core.Selector, now: int) -> bool:
    for cond in sel.where:
        assert cond.attribute is not None
        if cond.attribute.startswith("product."):
            key = cond.attribute[len("product.") :]
            products = [p.get(key) for p in row.get("products") or [] if isinstance(p, dict)]
            if not test_any(products, cond, now):
                return False
        elif not test_value(event_value(row, cond.attribute), cond, now):
            return False
    return True


def selects(row: Mapping[str, Any], sel: core.Selector, now: int) -> bool:
    if sel.flag is not None and not row.get(sel.flag):
        return False
    if sel.event_type is not None and row.get("event_type") != sel.event_type:
        return False
    if sel.name_lc is not None and row.get("name_lc") != sel.name_lc:
        return False
    cet = row.get("custom_event_type")
    if sel.custom_event_type_lc is not None and (cet is None or cet.lower() != sel.custom_event_type_lc):
        return False
    if sel.action_lc is not None and row.get("action") != sel.action_lc:
        return False
    return _where_ok(row, sel, now)


def in_range(ts: int, r: core.TimeRange, ctx: EvalContext) -> bool:
    now = ctx.now_ms
    if ts > now:
        return False
    if r.kind == "lookback":
        return ts > now - ctx.lookback_ms
    if r.kind == "rolling":
        return now - r.older_ms < ts <= now - r.newer_ms
    if r.kind == "parent":
        return ctx.parent_entered_at is not None and ts > ctx.parent_entered_at
    if r.kind == "absolute":
        return (r.start_ms is None or ts >= r.start_ms) and (r.end_ms is None or ts < r.end_ms)
    return True


def _scoped(user: UserData, ctx: EvalContext) -> list[Mapping[str, Any]]:
    return [e for e in user.events if ctx.input_ids is None or e["input_id"] in ctx.input_ids]


def _event_test(node: core.EventTest, user: UserData, ctx: EvalContext) -> bool:
    rows = [
        e
        for e in _scoped(user, ctx)
        if in_range(e["ts"], node.window, ctx) and selects(e, node.selector, ctx.now_ms)
    ]
    return test_value(aggregate(node.fn, node.attribute, rows), node.test, ctx.now_ms)


def aggregate(fn: str, attribute: str | None, rows: list[Mapping[str, Any]]) -> Decimal | None:
    """count / sum / distinct are 0 over nothing; min / max / avg are then missing."""
    values = [] if attribute is None else [event_value(r, attribute) for r in rows]
    if fn == "count":
        return Decimal(len(rows) if attribute is None else sum(v is not None for v in values))
    if fn == "distinct":
        return Decimal(len({k for k in map(distinct_key, values) if k is not None}))
    if fn == "sum":
        return sum((d for d in map(decimal_of, values) if d is not None), Decimal(0))
    nums = [n for n in map(number_of, values) if n is not None]
    if not nums:
        return None
    if fn == "min":
        return Decimal(min(nums))
    if fn == "max":
        return Decimal(max(nums))
    return Decimal(sum(nums) / len(nums))


def _sequence_test(node: core.SequenceTest, user: UserData, ctx: EvalContext) -> bool:
    now = ctx.now_ms
    rows = [e for e in _scoped(user, ctx) if e["ts"] <= now]
    firsts = [e["ts"] for e in rows if in_range(e["ts"], node.window, ctx) and selects(e, node.first, now)]
    thens = [e["ts"] for e in rows if selects(e, node.then, now)]
    for t in firsts:
        followed = any(t < u <= t + node.within_ms for u in thens)
        if node.completed and followed:
            return True
        if not node.completed and not followed and now >= t + node.within_ms:
            return True
    return False


def _order(e: Mapping[str, Any]) -> tuple[int, int]:
    return (e["ts"], e["event_id"])


def calculated_value(defn: CalculatedAttribute, user: UserData, now_ms: int) -> object:
    """The current value of a calculated attribute (SPEC §4.5) for one user."""
    ctx = EvalContext(now_ms=now_ms, lookback_ms=0)
    rng = core.calc_range(defn)
    sel = core.selector(defn.event, defn.where)
    rows = sorted(
        (e for e in user.events if in_range(e["ts"], rng, ctx) and selects(e, sel, now_ms)), key=_order
    )
    calc, attribute = defn.calculation, defn.attribute
    if attribute is not None:
        rows = [e for e in rows if event_value(e, attribute) is not None]
    if calc in ("count", "sum", "min", "max", "avg"):
        return aggregate(calc, attribute, rows)
    if calc in ("first_timestamp", "last_timestamp"):
        if not rows:
            return None
        return Decimal(rows[0 if calc == "first_timestamp" else -1]["ts"])
    assert attribute is not None
    if calc in ("first_value", "last_value"):
        return event_value(rows[0 if calc == "first_value" else -1], attribute) if rows else None
    keyed = [(distinct_key(event_value(e, attribute)), e) for e in rows]
    keys = [(k, e) for k, e in keyed if k is not None]
    if calc == "unique_count":
        return Decimal(len({k for k, _ in keys}))
    if calc == "unique_list":
        return sorted({k for k, _ in keys})
    # most_frequent: the highest count; ties go to the value seen most recently
    best: dict[str, tuple[int, tuple[int, int]]] = {}
    for k, e in keys:
        count, last = best.get(k, (0, (0, 0)))
        best[k] = (count + 1, max(last, _order(e)))
    if not best:
        return None
    return max(best.items(), key=lambda item: item[1])[0]
