"""Hypothesis strategies: random criteria of every leaf type and random users with events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from milepost.criteria.reference import Consent, UserData

DAY = 86_400_000
NOW = 1_780_315_200_000  # 2026-06-01T12:00:00Z

TEXTS = ["", "a", "A", "ab", "Jazz", "jazz", "punk rock", "10", "2.5", "-3", "1e3", "true", "FALSE",
         "2026-05-01", "2026-05-31T23:00:00Z", "2026-06-01T10:00:00+02:00", "2026-02-30", "x_y%", "Éa", "c100"]  # fmt: skip
NUMBERS: list[int | float] = [-3, 0, 1, 2, 10, 20, 365, 0.5, 2.5, 10.0, -1.25, 1780228800000]
REGEXES = ["^a", "b$", "[0-9]+", "a.c", "^j.*z$", "^c[0-9]+$", "rock"]
PATTERNS = ["*", "a*", "*z", "j?zz", "*@example.com", "x_y%", "?"]
DATES: list[Any] = ["2026-05-01", "2026-05-31", "2026-06-01", 1780228800000, "2026-05-31T23:00:00Z"]
OFFSETS = [0, 1, 60_000, 3_600_000, DAY - 1, DAY, DAY + 1, 2 * DAY, 7 * DAY - 1, 7 * DAY, 7 * DAY + 1,
           30 * DAY, 89 * DAY, 90 * DAY, 91 * DAY, 400 * DAY, -60_000]  # fmt: skip
ATTRS = ["a", "b", "genres", "$intelligent_attribute:cortex:churn__score"]
EVENT_ATTRS = ["k", "amt", "cat", "total_amount", "transaction_id"]

scalars = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.booleans())
json_values = st.one_of(scalars, st.lists(scalars, max_size=3))
durations = st.builds(
    lambda a, u: {"amount": a, "unit": u},
    st.sampled_from([1, 2, 7, 30]),
    st.sampled_from(["minutes", "hours", "days", "weeks"]),
)
offsets = st.one_of(st.sampled_from(OFFSETS), st.integers(-3_600_000, 100 * DAY))
times = offsets.map(lambda o: NOW - o)
optional_times = st.one_of(st.none(), times)


@st.composite
def operands(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """An op and fitting operands for a value of `kind` (any, number, text, identity, date)."""
    ops = {
        "any": ["exists", "not_exists", "empty", "equals", "not_equals", "contains", "not_contains",
                "starts_with", "ends_with", "pattern", "matches", "in", "not_in", "greater_than",
                "greater_or_equal", "less_than", "less_or_equal", "between", "before", "after", "on_date",
                "between_dates", "within_last", "more_than_ago", "includes", "not_includes", "partial_match"],
        "number": ["exists", "not_exists", "equals", "not_equals", "in", "not_in", "greater_than",
                   "greater_or_equal", "less_than", "less_or_equal", "between"],
        "text": ["exists", "not_exists", "empty", "equals", "not_equals", "contains", "starts_with",
                 "ends_with", "pattern", "matches", "in", "not_in", "greater_than", "between"],
        "identity": ["exists", "not_exists", "equals", "not_equals", "contains", "pattern", "matches", "in", "not_in"],
        "date": ["exists", "not_exists", "before", "after", "on_date", "between_dates", "within_last", "more_than_ago"],
    }[kind]  # fmt: skip
    op = draw(st.sampled_from(ops))
    num = st.sampled_from(NUMBERS)
    if op in ("exists", "not_exists", "empty"):
        return {"op": op}
    if op == "matches":
        return {"op": op, "value": draw(st.sampled_from(REGEXES))}
    if op == "pattern":
        return {"op": op, "value": draw(st.sampled_from(PATTERNS))}
    if op in ("contains", "not_contains", "starts_with", "ends_with", "partial_match"):
        return {"op": op, "value": draw(st.sampled_from(TEXTS))}
    item = {"number": num, "identity": st.sampled_from(TEXTS)}.get(kind, scalars)
    if kind == "text":
        item = st.one_of(st.sampled_from(TEXTS), num)
    if op in ("equals", "not_equals", "includes", "not_includes"):
        return {"op": op, "value": draw(item)}
    if op in ("in", "not_in"):
        return {"op": op, "values": draw(st.lists(item, max_size=3))}
    if op == "between":
        lo, hi = sorted([draw(num), draw(num)])
        return {"op": op, "min": lo, "max": hi}
    if op in ("greater_than", "greater_or_equal", "less_than", "less_or_equal"):
        return {"op": op, "value": draw(num)}
    if op in ("within_last", "more_than_ago"):
        return {"op": op, "value": draw(durations)}
    if op == "between_dates":
        a, b = draw(st.sampled_from(DATES[:3])), draw(st.sampled_from(DATES[:3]))
        return {"op": op, "values": sorted([a, b])}
    return {"op": op, "value": draw(st.sampled_from(DATES))}


@st.composite
def selectors(draw: st.DrawFn, with_where: bool = False) -> dict[str, Any]:
    event_type = draw(
        st.sampled_from(
            ["custom_event", "commerce_event", "screen_view", "session_start", "install", "upgrade"]
        )
    )
    sel: dict[str, Any] = {"event_type": event_type}
    if event_type in ("custom_event", "screen_view") and draw(st.booleans()):
        sel["name"] = draw(st.sampled_from(["watch", "WATCH", "buy"]))
    if event_type == "custom_event" and draw(st.booleans()):
        sel["custom_event_type"] = draw(st.sampled_from(["media", "Other"]))
    if event_type == "commerce_event" and draw(st.booleans()):
        sel["action"] = draw(st.sampled_from(["purchase", "add_to_cart"]))
    if with_where and not draw(st.integers(0, 3)):
        sel["where"] = draw(st.lists(conditions(), max_size=2))
    return sel


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    attribute = draw(st.sampled_from([*EVENT_ATTRS, "product.cat", "product.price"]))
    kind = {"total_amount": "number", "transaction_id": "text"}.get(attribute, "any")
    return {"attribute": attribute, **draw(operands(kind))}


windows = st.one_of(
    st.none(),
    durations.map(lambda d: {"last": d}),
    st.sampled_from([(0, 2), (1, 7), (4, 6)]).map(
        lambda p: {"between_ago": {"from": p[0], "to": p[1], "unit": "days"}}
    ),
    st.sampled_from(["since", "before", "after", "on_date"]).flatmap(
        lambda k: st.sampled_from(DATES).map(lambda d: {k: d})
    ),
    st.just({"between_dates": ["2026-05-01", "2026-05-31"]}),
    st.just({"since_parent_entry": True}),
)


@st.composite
def havings(draw: st.DrawFn) -> dict[str, Any] | None:
    fn = draw(st.sampled_from(["count", "sum", "min", "max", "avg", "distinct", None]))
    if fn is None:
        return None
    out: dict[str, Any] = {
        "fn": fn,
        **draw(operands("number").filter(lambda o: o["op"] not in ("exists", "not_exists", "in", "not_in"))),
    }
    if fn != "count" or draw(st.booleans()):
        out["attribute"] = draw(st.sampled_from(EVENT_ATTRS))
    return out


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["event", "sequence", "user_attribute", "calculated_attribute", "prediction",
                                 "identity", "consent", "device", "first_seen", "last_seen", "audience", "parent_entry"]))  # fmt: skip
    leaf: dict[str, Any] = {"type": kind}
    if kind == "event":
        leaf["event"] = draw(selectors())
        leaf["where"] = draw(st.lists(conditions(), max_size=1))
        having = draw(havings())
        if having is not None:
            leaf["having"] = having
        window = draw(windows)
        if window is not None:
            leaf["window"] = window
    elif kind == "sequence":
        leaf.update(first=draw(selectors(True)), then=draw(selectors(True)), within=draw(durations))
        leaf["completed"] = draw(st.booleans())
        window = draw(windows)
        if window is not None:
            leaf["window"] = window
    elif kind == "user_attribute":
        leaf.update(attribute=draw(st.sampled_from(ATTRS)), **draw(operands("any")))
    elif kind == "calculated_attribute":
        leaf.update(name=draw(st.sampled_from(["calc0", "calc1"])), **draw(operands("any")))
    elif kind == "prediction":
        leaf.update(prediction="churn", measure="score", **draw(operands("number")))
    elif kind == "identity":
        leaf.update(
            identity=draw(st.sampled_from(["email", "customer_id", "ios_idfv"])), **draw(operands("identity"))
        )
    elif kind == "consent":
        leaf.update(regulation="gdpr", purpose="marketing") if draw(st.booleans()) else leaf.update(
            regulation="ccpa"
        )
        leaf["state"] = draw(st.sampled_from(["consented", "not_consented", "present", "not_present"]))
    elif kind == "device":
        leaf.update(field=draw(st.sampled_from(["platform", "os_version"])), **draw(operands("text")))
    elif kind in ("first_seen", "last_seen"):
        leaf.update(draw(operands("date")))
    elif kind == "audience":
        leaf.update(audience_id=draw(st.sampled_from([1, 2])), member=draw(st.booleans()))
        if draw(st.booleans()):
            leaf["member_for"] = draw(durations)
    else:
        leaf.update(op=draw(st.sampled_from(["within_last", "more_than_ago"])), value=draw(durations))
    return leaf


groups = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
    ),
    max_leaves=5,
)
criteria = st.one_of(leaves(), leaves(), groups)


@st.composite
def calculated_definitions(draw: st.DrawFn, name: str) -> dict[str, Any]:
    calc = draw(st.sampled_from(["count", "sum", "min", "max", "avg", "most_frequent", "unique_count", "first_value",
                                 "last_value", "first_timestamp", "last_timestamp", "unique_list"]))  # fmt: skip
    out: dict[str, Any] = {"name": name, "calculation": calc, "event": draw(selectors())}
    if calc not in ("count", "first_timestamp", "last_timestamp") or draw(st.booleans()):
        out["attribute"] = draw(st.sampled_from(EVENT_ATTRS))
    out["where"] = draw(st.lists(conditions(), max_size=1))
    window = draw(
        st.one_of(
            st.none(),
            st.sampled_from(DATES).map(lambda d: {"since": d}),
            durations.map(lambda d: {"within": d}),
        )
    )
    if window is not None:
        out["window"] = window
    return out


products = st.lists(
    st.fixed_dictionaries({}, optional={"cat": json_values, "price": st.sampled_from(NUMBERS)}), max_size=2
)


@st.composite
def events(draw: st.DrawFn, mpid: int, first_id: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(1, 8))):
        event_type = draw(st.sampled_from(["custom_event", "commerce_event", "screen_view", "session_start",
                                           "application_state_transition", "first_run"]))  # fmt: skip
        name = (
            draw(st.sampled_from(["watch", "Watch", "buy"]))
            if event_type in ("custom_event", "screen_view")
            else None
        )
        commerce = event_type == "commerce_event"
        ts = draw(times)
        rows.append(
            {
                "event_id": first_id + i,
                "mpid": mpid,
                "input_id": draw(st.sampled_from([1, 2, 3])),
                "event_type": event_type,
                "name": name,
                "name_lc": None if name is None else name.lower(),
                "custom_event_type": draw(st.sampled_from(["media", "other"]))
                if event_type == "custom_event"
                else None,
                "action": draw(st.sampled_from(["purchase", "add_to_cart"])) if commerce else None,
                "is_install": event_type == "first_run"
                or (event_type == "application_state_transition" and draw(st.booleans())),
                "is_upgrade": event_type == "application_state_transition" and draw(st.booleans()),
                "ts": ts,
                "received_at": ts,
                "total_amount": draw(st.sampled_from([None, "0", "10.5", "60", "0.1", "0.2", "100"]))
                if commerce
                else None,
                "transaction_id": draw(st.sampled_from([None, "t1", "12"])) if commerce else None,
                "attrs": draw(st.dictionaries(st.sampled_from(["k", "amt", "cat"]), json_values, max_size=3)),
                "products": draw(products) if commerce else [],
            }
        )
    for r in rows:
        if r["total_amount"] is not None:
            r["total_amount"] = Decimal(r["total_amount"])
    return rows


@st.composite
def users(draw: st.DrawFn, mpid: int) -> UserData:
    consents = {}
    for key in [("gdpr", "marketing"), ("ccpa", "data_sale_opt_out")]:
        if draw(st.booleans()):
            consents[key] = Consent(consented=draw(st.booleans()), ts=NOW - DAY, received_at=NOW - DAY)
    identities = {}
    for kind, pool in [
        ("email", ["Ann@Example.com", "bob@example.org"]),
        ("customer_id", ["c100", "cx", "7"]),
    ]:
        if draw(st.booleans()):
            identities[kind] = draw(st.sampled_from(pool))
    device_values = st.one_of(st.none(), st.sampled_from(["iOS", "Android", "18.1", "17", ""]))
    devices = draw(
        st.lists(st.fixed_dictionaries({"platform": device_values, "os_version": device_values}), max_size=2)
    )
    return UserData(
        mpid=mpid,
        attributes=draw(st.dictionaries(st.sampled_from(ATTRS), json_values, max_size=4)),
        identities=identities,
        device_ids={"ios_idfv": [f"idfv-{mpid}-{i}" for i in range(draw(st.integers(0, 2)))]},
        consents=consents,
        devices=devices,
        first_seen=draw(optional_times),
        last_seen=draw(optional_times),
        events=draw(events(mpid, mpid * 100)),
    )
