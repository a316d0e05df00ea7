"""Parse and check a criteria document (SPEC §4); every rejection names the offending path."""

from __future__ import annotations

from typing import Any, get_args

from milepost.criteria import operators as ops
from milepost.criteria.model import (
    AllGroup,
    AnyGroup,
    AudienceLeaf,
    BetweenAgo,
    BetweenAgoWindow,
    CalculatedAttribute,
    CalculatedAttributeLeaf,
    CalcWindow,
    Condition,
    ConsentLeaf,
    Criteria,
    DateWindow,
    DeviceLeaf,
    EventLeaf,
    EventSelector,
    FirstSeenLeaf,
    Having,
    IdentityLeaf,
    LastSeenLeaf,
    LastWindow,
    NotGroup,
    ParentEntryLeaf,
    PredictionLeaf,
    SequenceLeaf,
    SequenceStep,
    SinceParentEntryWindow,
    UserAttributeLeaf,
    Window,
)
from milepost.criteria.operators import fail, join, parse_duration
from milepost.errors import InvalidCriteria
from milepost.model.batch import DEVICE_FIELDS

EVENT_TYPES = frozenset(
    {
        "custom_event",
        "commerce_event",
        "screen_view",
        "session_start",
        "session_end",
        "application_state_transition",
        "crash_report",
        "uninstall",
        "opt_out",
        "push_registration",
        "push_message",
        "user_attribute_change",
        "user_identity_change",
        "breadcrumb",
        "network_performance",
        "first_run",
        "profile",
        "pre_attribution",
        "push_reaction",
        "install",
        "upgrade",
    }
)
TEXT_COLUMNS = frozenset({"transaction_id", "currency_code", "coupon_code"})
CALCULATIONS = get_args(CalculatedAttribute.model_fields["calculation"].annotation)
LEAF_TYPES = (
    "event",
    "sequence",
    "user_attribute",
    "calculated_attribute",
    "prediction",
    "identity",
    "consent",
    "device",
    "first_seen",
    "last_seen",
    "audience",
    "parent_entry",
)
_OPERANDS = {"op", "value", "values", "min", "max"}


def parse_criteria(obj: object) -> Criteria:
    """Check a criteria document (parsed JSON) and return its canonical model."""
    return _criteria(obj, "")


def parse_calculated_attribute(obj: object) -> CalculatedAttribute:
    """Check an account-level calculated attribute definition (SPEC §4.5)."""
    raw = _obj(obj, "", "a calculated attribute definition")
    _fields(raw, "", {"name", "calculation", "event", "attribute", "where", "window"})
    name = _text(raw.get("name"), "name")
    calc = raw.get("calculation")
    if calc not in CALCULATIONS:
        raise fail("calculation", f"unknown calculation {calc!r}")
    attribute = raw.get("attribute")
    if attribute is not None:
        attribute = _text(attribute, "attribute")
    elif calc not in ("count", "first_timestamp", "last_timestamp"):
        raise fail("attribute", f"{calc!r} needs an attribute")
    window = None
    if raw.get("window") is not None:
        w = _obj(raw["window"], "window", "a window")
        _fields(w, "window", {"since", "within"})
        if len(w) != 1:
            raise fail("window", "expected exactly one of 'since' or 'within'")
        if "since" in w:
            ops.check_date(w["since"], "window.since")
            window = CalcWindow(since=w["since"])
        else:
            within = w["within"]
            if isinstance(within, int) and not isinstance(within, bool):
                within = {"amount": within, "unit": "days"}
            window = CalcWindow(within=parse_duration(within, "window.within"))
    return CalculatedAttribute(
        name=name,
        calculation=calc,
        event=_selector(raw.get("event"), "event"),
        attribute=attribute,
        where=_where(raw.get("where"), "where"),
        window=window,
    )


def _obj(v: object, path: str, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise fail(path, f"expected {what}, got {ops.describe(v)}")
    return v


def _fields(raw: dict[str, Any], path: str, allowed: set[str]) -> None:
    for key in sorted(set(raw) - allowed, key=str):
        raise fail(join(path, str(key)), "unknown field")


def _text(v: object, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise fail(path, f"expected a non-empty string, got {v!r}")
    return v


def _criteria(obj: object, path: str) -> Criteria:
    raw = _obj(obj, path, "a criteria object")
    for key in ("all", "any"):
        if key in raw:
            _fields(raw, path, {key})
            items = raw[key]
            if not isinstance(items, list):
                raise fail(join(path, key), "expected a list of criteria")
            parsed = tuple(_criteria(item, join(path, f"{key}[{i}]")) for i, item in enumerate(items))
            return AllGroup(all=parsed) if key == "all" else AnyGroup(any=parsed)
    if "not" in raw:
        _fields(raw, path, {"not"})
        return NotGroup(not_=_criteria(raw["not"], join(path, "not")))
    if "type" not in raw:
        raise fail(path, "expected a group ('all', 'any', 'not') or a leaf with a 'type'")
    kind = raw["type"]
    if kind not in LEAF_TYPES:
        raise fail(join(path, "type"), f"unknown leaf type {kind!r}")
    return _LEAVES[kind](raw, path)


def _event_leaf(raw: dict[str, Any], path: str) -> EventLeaf:
    _fields(raw, path, {"type", "event", "where", "having", "window"})
    leaf = EventLeaf(
        event=_selector(raw.get("event"), join(path, "event")),
        where=_where(raw.get("where"), join(path, "where")),
        window=_window(raw.get("window"), join(path, "window")),
    )
    if raw.get("having") is not None:
        leaf = leaf.model_copy(update={"having": _having(raw["having"], join(path, "having"))})
    return leaf


def _sequence_leaf(raw: dict[str, Any], path: str) -> SequenceLeaf:
    _fields(raw, path, {"type", "first", "then", "within", "completed", "window"})
    completed = raw.get("completed", True)
    if not isinstance(completed, bool):
        raise fail(join(path, "completed"), "expected true or false")
    return SequenceLeaf(
        first=_step(raw.get("first"), join(path, "first")),
        then=_step(raw.get("then"), join(path, "then")),
        within=parse_duration(raw.get("within"), join(path, "within")),
        completed=completed,
        window=_window(raw.get("window"), join(path, "window")),
    )


def _op_fields(raw: dict[str, Any], path: str, kind: str, what: str) -> dict[str, Any]:
    op = ops.check_op_kind(raw.get("op"), kind, path, what)
    return {"op": op, **ops.check_operands(raw, op, kind, path)}


def _user_attribute(raw: dict[str, Any], path: str) -> UserAttributeLeaf:
    _fields(raw, path, {"type", "attribute"} | _OPERANDS)
    attribute = _text(raw.get("attribute"), join(path, "attribute"))
    return UserAttributeLeaf(attribute=attribute, **_op_fields(raw, path, ops.KIND_ANY, "a user attribute"))


def _calculated(raw: dict[str, Any], path: str) -> CalculatedAttributeLeaf:
    _fields(raw, path, {"type", "name"} | _OPERANDS)
    name = _text(raw.get("name"), join(path, "name"))
    fields = _op_fields(raw, path, ops.KIND_ANY, "a calculated attribute")
    return CalculatedAttributeLeaf(name=name, **fields)


def _prediction(raw: dict[str, Any], path: str) -> PredictionLeaf:
    _fields(raw, path, {"type", "prediction", "measure"} | _OPERANDS)
    name = _text(raw.get("prediction"), join(path, "prediction"))
    measure = raw.get("measure")
    if measure not in ("score", "percentile"):
        raise fail(join(path, "measure"), f"expected 'score' or 'percentile', got {measure!r}")
    fields = _op_fields(raw, path, ops.KIND_NUMBER, "a prediction")
    return PredictionLeaf(prediction=name, measure=measure, **fields)


def _identity(raw: dict[str, Any], path: str) -> IdentityLeaf:
    _fields(raw, path, {"type", "identity"} | _OPERANDS)
    identity = _text(raw.get("identity"), join(path, "identity")).lower()
    identity = "customer_id" if identity == "customerid" else identity
    fields = _op_fields(raw, path, ops.KIND_IDENTITY, "an identity")
    return IdentityLeaf(identity=identity, **fields)


def _consent(raw: dict[str, Any], path: str) -> ConsentLeaf:
    _fields(raw, path, {"type", "regulation", "purpose", "state"})
    regulation = raw.get("regulation")
    if regulation not in ("gdpr", "ccpa"):
        raise fail(join(path, "regulation"), f"expected 'gdpr' or 'ccpa', got {regulation!r}")
    purpose = raw.get("purpose", "data_sale_opt_out" if regulation == "ccpa" else None)
    purpose = _text(purpose, join(path, "purpose")).lower()
    state = raw.get("state")
    if state not in ("consented", "not_consented", "present", "not_present"):
        raise fail(join(path, "state"), f"unknown consent state {state!r}")
    return ConsentLeaf(regulation=regulation, purpose=purpose, state=state)


def _device(raw: dict[str, Any], path: str) -> DeviceLeaf:
    _fields(raw, path, {"type", "field"} | _OPERANDS)
    field = raw.get("field")
    if field not in DEVICE_FIELDS:
        raise fail(join(path, "field"), f"unknown device field {field!r}")
    return DeviceLeaf(field=field, **_op_fields(raw, path, ops.KIND_TEXT, "a device field"))


def _seen(raw: dict[str, Any], path: str) -> FirstSeenLeaf | LastSeenLeaf:
    _fields(raw, path, {"type"} | _OPERANDS)
    fields = _op_fields(raw, path, ops.KIND_DATE, f"{raw['type']} (a date)")
    return FirstSeenLeaf(**fields) if raw["type"] == "first_seen" else LastSeenLeaf(**fields)


def _audience(raw: dict[str, Any], path: str) -> AudienceLeaf:
    _fields(raw, path, {"type", "audience_id", "journey", "milestone", "member", "member_for"})
    audience_id = raw.get("audience_id")
    journey, milestone = raw.get("journey"), raw.get("milestone")
    if audience_id is not None:
        if not isinstance(audience_id, int) or isinstance(audience_id, bool) or audience_id <= 0:
            raise fail(join(path, "audience_id"), f"expected a positive integer, got {audience_id!r}")
        if journey is not None or milestone is not None:
            raise fail(path, "give either 'audience_id' or 'journey' and 'milestone', not both")
    else:
        if journey is None and milestone is None:
            raise fail(path, "needs 'audience_id' (or 'journey' and 'milestone')")
        journey = _text(journey, join(path, "journey"))
        milestone = _text(milestone, join(path, "milestone"))
    member = raw.get("member", True)
    if not isinstance(member, bool):
        raise fail(join(path, "member"), "expected true or false")
    member_for = raw.get("member_for")
    return AudienceLeaf(
        audience_id=audience_id,
        journey=journey,
        milestone=milestone,
        member=member,
        member_for=None if member_for is None else parse_duration(member_for, join(path, "member_for")),
    )


def _parent_entry(raw: dict[str, Any], path: str) -> ParentEntryLeaf:
    _fields(raw, path, {"type", "op", "value"})
    op = raw.get("op")
    if op not in ("within_last", "more_than_ago"):
        raise fail(join(path, "op"), f"{op!r} does not apply to parent_entry (within_last, more_than_ago)")
    return ParentEntryLeaf(op=op, value=parse_duration(raw.get("value"), join(path, "value")))


def _selector_fields(raw: dict[str, Any], path: str) -> dict[str, Any]:
    event_type = raw.get("event_type")
    if event_type not in EVENT_TYPES:
        raise fail(join(path, "event_type"), f"unknown event type {event_type!r}")
    out: dict[str, Any] = {"event_type": event_type}
    owners = {"name": ("custom_event", "screen_view"), "custom_event_type": ("custom_event",)}
    owners["action"] = ("commerce_event",)
    for key, types in owners.items():
        if raw.get(key) is not None:
            if event_type not in types:
                raise fail(join(path, key), f"not available on {event_type!r} events")
            out[key] = _text(raw[key], join(path, key))
    return out


def _selector(obj: object, path: str) -> EventSelector:
    raw = _obj(obj, path, "an event selector")
    _fields(raw, path, {"event_type", "name", "custom_event_type", "action"})
    return EventSelector(**_selector_fields(raw, path))


def _step(obj: object, path: str) -> SequenceStep:
    raw = _obj(obj, path, "an event selector")
    _fields(raw, path, {"event_type", "name", "custom_event_type", "action", "where"})
    return SequenceStep(**_selector_fields(raw, path), where=_where(raw.get("where"), join(path, "where")))


def _where(obj: object, path: str) -> tuple[Condition, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise fail(path, "expected a list of conditions")
    return tuple(_event_condition(item, join(path, f"[{i}]")) for i, item in enumerate(obj))


def event_attribute_kind(attribute: str) -> tuple[str, str]:
    """The operator kind and description of an event attribute name."""
    if attribute == "total_amount":
        return ops.KIND_NUMBER, "the number attribute 'total_amount'"
    if attribute in TEXT_COLUMNS:
        return ops.KIND_TEXT, f"the text attribute {attribute!r}"
    return ops.KIND_ANY, "an event attribute"


def _event_condition(obj: object, path: str) -> Condition:
    raw = _obj(obj, path, "a condition")
    _fields(raw, path, {"attribute"} | _OPERANDS)
    attribute = _text(raw.get("attribute"), join(path, "attribute"))
    if attribute.startswith("product.") and len(attribute) == len("product."):
        raise fail(join(path, "attribute"), "'product.' needs a field name")
    kind, what = event_attribute_kind(attribute)
    return Condition(attribute=attribute, **_op_fields(raw, path, kind, what))


def _having(obj: object, path: str) -> Having:
    raw = _obj(obj, path, "an aggregate test")
    _fields(raw, path, {"fn", "attribute"} | _OPERANDS)
    fn = raw.get("fn", "count")
    if fn not in ("count", "sum", "min", "max", "avg", "distinct"):
        raise fail(join(path, "fn"), f"unknown aggregate {fn!r}")
    attribute = raw.get("attribute")
    if attribute is not None:
        attribute = _text(attribute, join(path, "attribute"))
        if attribute.startswith("product."):
            raise fail(join(path, "attribute"), "aggregates take an event attribute, not a product field")
    elif fn != "count":
        raise fail(join(path, "attribute"), f"{fn!r} needs an attribute")
    fields = _op_fields(raw, path, ops.KIND_NUMBER, "an aggregate")
    if fields["op"] in ops.MEMBERSHIP or fields["op"] == "exists" or fields["op"] == "not_exists":
        raise fail(join(path, "op"), f"{fields['op']!r} does not apply to an aggregate")
    fields.setdefault("value", None)
    return Having(fn=fn, attribute=attribute, **fields)


def _window(obj: object, path: str) -> Window | None:
    if obj is None:
        return None
    raw = _obj(obj, path, "a window")
    if len(raw) != 1:
        raise fail(path, "expected exactly one window kind")
    (kind, value), sub = next(iter(raw.items())), join(path, next(iter(raw)))
    if kind == "last":
        return LastWindow(last=parse_duration(value, sub))
    if kind == "between_ago":
        b = _obj(value, sub, "{from, to, unit}")
        _fields(b, sub, {"from", "to", "unit"})
        lo, hi = b.get("from"), b.get("to")
        for key, v in (("from", lo), ("to", hi)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise fail(join(sub, key), f"expected a non-negative integer, got {v!r}")
        assert isinstance(lo, int) and isinstance(hi, int)
        if lo >= hi:
            raise fail(sub, f"'from' ({lo}) must be less than 'to' ({hi})")
        duration = parse_duration({"amount": 1, "unit": b.get("unit")}, sub)
        return BetweenAgoWindow(between_ago=BetweenAgo(from_=lo, to=hi, unit=duration.unit))
    if kind in ("since", "before", "after", "on_date"):
        ops.check_date(value, sub)
        return DateWindow(kind=kind, dates=(value,))
    if kind == "between_dates":
        if not isinstance(value, list) or len(value) != 2:
            raise fail(sub, "expected two dates [D1, D2]")
        for i, d in enumerate(value):
            ops.check_date(d, join(sub, f"[{i}]"))
        checked = ops.check_operands({"op": "between_dates", "values": value}, "between_dates", "any", sub)
        return DateWindow(kind="between_dates", dates=checked["values"])
    if kind == "since_parent_entry":
        if value is not True:
            raise fail(sub, "expected true")
        return SinceParentEntryWindow()
    raise fail(sub, f"unknown window {kind!r}")


_LEAVES: dict[str, Any] = {
    "event": _event_leaf,
    "sequence": _sequence_leaf,
    "user_attribute": _user_attribute,
    "calculated_attribute": _calculated,
    "prediction": _prediction,
    "identity": _identity,
    "consent": _consent,
    "device": _device,
    "first_seen": _seen,
    "last_seen": _seen,
    "audience": _audience,
    "parent_entry": _parent_entry,
}

__all__ = ["InvalidCriteria", "parse_calculated_attribute", "parse_criteria"]
