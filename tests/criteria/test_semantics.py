"""Operator and leaf semantics of SPEC §4 on small tables, checked on the reference and the SQL alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from criteria_store import load

from milepost.criteria import (
    CompileContext,
    Consent,
    EvalContext,
    UserData,
    compile_criteria,
    evaluate,
    parse_calculated_attribute,
    parse_criteria,
    to_sql,
)

DAY = 86_400_000
NOW = 1_780_315_200_000  # 2026-06-01T12:00:00Z
LOOKBACK = 90 * DAY


def members(
    doc: dict[str, Any], users: list[UserData], memberships: tuple[tuple[int, int, int], ...] = (), **kw: Any
) -> set[int]:
    """Matching mpids; fails unless the reference and the compiled SQL agree."""
    crit = parse_criteria(doc)
    calcs = {c.name: c for c in (parse_calculated_attribute(x) for x in kw.get("calculated", []))}
    parent = kw.get("parent")
    expected = set()
    for u in users:
        mine = {a: t for a, m, t in memberships if m == u.mpid}
        ctx = EvalContext(
            NOW, LOOKBACK, kw.get("inputs"), mine, None if parent is None else mine.get(parent), calcs
        )
        if evaluate(crit, u, ctx):
            expected.add(u.mpid)
    con = load(users, memberships)
    inputs = kw.get("inputs")
    cctx = CompileContext(NOW, LOOKBACK, None if inputs is None else tuple(inputs), parent, calcs)
    got = {r[0] for r in con.execute(to_sql(compile_criteria(crit, cctx))).fetchall()}
    assert got == expected
    return got


def attr_users(*values: Any) -> list[UserData]:
    """User i+1 has attribute `a` = values[i]; None means missing."""
    return [UserData(mpid=i + 1, attributes={} if v is None else {"a": v}) for i, v in enumerate(values)]


def ua(op: str, **operands: Any) -> dict[str, Any]:
    return {"type": "user_attribute", "attribute": "a", "op": op, **operands}


CASES = [
    (ua("equals", value="Paid"), ["paid", "PAID", "free", None, ["paid"]], {1, 2}),
    (ua("not_equals", value="paid"), ["paid", "free", None, 3], {2, 4}),
    (ua("equals", value=10), [10, "10", "10.0", "abc", True, 10.5], {1, 2, 3}),
    (ua("equals", value=True), [True, "true", "TRUE", 1, False], {1, 2, 3}),
    (ua("equals", value="true"), [True, "True", 1], {1, 2}),
    (ua("contains", value="AZ"), ["jazz", "Bazaar", "rock", 12, None], {1, 2}),
    (ua("not_contains", value="az"), ["jazz", "rock", None, ["rock"]], {2}),
    (ua("starts_with", value="ja"), ["Jazz", "ajar"], {1}),
    (ua("ends_with", value="ZZ"), ["jazz", "jaz"], {1}),
    (ua("pattern", value="*@example.com"), ["Ann@Example.com", "bob@example.org", "@example.com"], {1, 3}),
    (ua("pattern", value="j?zz"), ["jazz", "jaazz", "j_zz"], {1, 3}),
    (ua("pattern", value="50%"), ["50%", "500"], {1}),
    (ua("matches", value="^c[0-9]+$"), ["c100", "C7", "cx", "xc1"], {1, 2}),
    (ua("in", values=["US", "GB"]), ["us", "DE", "GB", None], {1, 3}),
    (ua("not_in", values=["US", "GB"]), ["us", "DE", None, ["DE"]], {2}),
    (ua("greater_than", value=365), ["400", "abc", 300, 500, True], {1, 4}),
    (ua("between", min=10, max=20), [10, 20.5, 20, "15", 9.99], {1, 3, 4}),
    (ua("less_or_equal", value=-1), [-1, "-1.5", 0], {1, 2}),
    (ua("exists"), ["", None, [], 0], {1, 3, 4}),
    (ua("not_exists"), ["", None], {2}),
    (ua("empty"), ["", None, [], "x", ["x"]], {1, 3}),
    (ua("includes", value="jazz"), [["Jazz", "Blues"], "jazz", ["rock"], None], {1, 2}),
    (ua("not_includes", value="jazz"), [["Jazz"], ["rock"], [], None, "rock"], {2, 3, 5}),
    (ua("partial_match", value="rock"), [["Punk rock"], ["jazz"], "rocky"], {1, 3}),
    (ua("includes", value=5), [[5, 6], ["5"], [4]], {1, 2}),
    (ua("after", value="2026-05-01"), ["2026-05-01", "2026-04-30T23:59:59Z", "2026-05-01T18:30:00Z"], {1, 3}),
    (ua("before", value="2026-05-01"), ["2026-05-01", "2026-04-30T23:59:59Z", 1777593599999, "nope"], {2, 3}),
    (
        ua("on_date", value="2026-05-01"),
        ["2026-05-01T23:59:59.999Z", "2026-05-02T01:00:00+02:00", "2026-05-02"],
        {1, 2},
    ),
    (
        ua("between_dates", values=["2026-05-01", "2026-05-03"]),
        ["2026-05-03T23:00:00Z", "2026-04-30", "2026-05-04"],
        {1},
    ),
    (
        ua("within_last", value={"amount": 7, "unit": "days"}),
        [NOW - 7 * DAY, NOW - 7 * DAY + 1, NOW + 1, NOW],
        {2, 4},
    ),
    (
        ua("more_than_ago", value={"amount": 1, "unit": "hours"}),
        [NOW - 3_600_000, NOW - 3_599_999, "2020-01-01"],
        {1, 3},
    ),
]


@pytest.mark.parametrize(("doc", "values", "expected"), CASES)
def test_operator(doc: dict[str, Any], values: list[Any], expected: set[int]) -> None:
    assert members(doc, attr_users(*values)) == expected


def test_not_of_missing_is_true() -> None:
    users = attr_users("paid", "free", None)
    assert members({"not": ua("equals", value="paid")}, users) == {2, 3}
    assert members({"all": []}, users) == {1, 2, 3}
    assert members({"any": []}, users) == set()


def ev(
    mpid: int, eid: int, ts: int, event_type: str = "custom_event", name: str | None = "watch", **kw: Any
) -> dict[str, Any]:
    row = {"event_id": eid, "mpid": mpid, "input_id": kw.pop("input_id", 1), "event_type": event_type, "name": name,
           "name_lc": None if name is None else name.lower(), "ts": ts, "received_at": ts, "attrs": {}, "products": []}  # fmt: skip
    row.update(kw)
    return row


WATCH = {"event_type": "custom_event", "name": "Watch"}


def test_event_window_lookback_inputs_and_aggregates() -> None:
    users = [
        UserData(1, events=[ev(1, 1, NOW - DAY), ev(1, 2, NOW - 2 * DAY, attrs={"amt": 1.5})]),
        UserData(2, events=[ev(2, 3, NOW - 8 * DAY), ev(2, 4, NOW - DAY, input_id=2, attrs={"amt": "2"})]),
        UserData(3, events=[ev(3, 5, NOW - 91 * DAY), ev(3, 6, NOW + 60_000)]),
    ]
    assert members({"type": "event", "event": WATCH}, users) == {1, 2}
    assert members({"type": "event", "event": WATCH}, users, inputs={2}) == {2}
    week = {"type": "event", "event": WATCH, "window": {"last": {"amount": 7, "unit": "days"}}}
    assert members({**week, "having": {"fn": "count", "op": "greater_or_equal", "value": 2}}, users) == {1}
    assert members({**week, "having": {"fn": "count", "op": "equals", "value": 0}}, users) == {3}
    assert members(
        {**week, "having": {"fn": "sum", "attribute": "amt", "op": "equals", "value": 0}}, users
    ) == {3}
    assert members(
        {**week, "having": {"fn": "min", "attribute": "amt", "op": "less_than", "value": 100}}, users
    ) == {1, 2}
    ago = {"type": "event", "event": WATCH, "window": {"between_ago": {"from": 4, "to": 10, "unit": "days"}}}
    assert members(ago, users) == {2}


def test_commerce_sum_is_exact_and_products_match_any() -> None:
    buy = {"event_type": "commerce_event", "action": "purchase"}
    users = [
        UserData(1, events=[ev(1, 1, NOW - DAY, "commerce_event", None, action="purchase", total_amount=Decimal("0.1")),
                            ev(1, 2, NOW - DAY, "commerce_event", None, action="purchase", total_amount=Decimal("0.2"))]),
        UserData(2, events=[ev(2, 3, NOW - DAY, "commerce_event", None, action="purchase", total_amount=Decimal("0.3"),
                            products=[{"category": "music"}, {"category": "Books"}])]),
    ]  # fmt: skip
    total = {
        "type": "event",
        "event": buy,
        "having": {"fn": "sum", "attribute": "total_amount", "op": "equals", "value": 0.3},
    }
    assert members(total, users) == {1, 2}
    books = {
        "type": "event",
        "event": buy,
        "where": [{"attribute": "product.category", "op": "equals", "value": "books"}],
    }
    assert members(books, users) == {2}


CART = {"event_type": "commerce_event", "action": "add_to_cart"}
BUY = {"event_type": "commerce_event", "action": "purchase"}


def c(mpid: int, i: int, ts: int) -> dict[str, Any]:
    """An add_to_cart event."""
    return ev(mpid, i, ts, "commerce_event", None, action="add_to_cart")


def p(mpid: int, i: int, ts: int) -> dict[str, Any]:
    """A purchase event."""
    return ev(mpid, i, ts, "commerce_event", None, action="purchase")


def test_sequences() -> None:
    users = [
        UserData(1, events=[c(1, 1, NOW - 2 * DAY)]),
        UserData(2, events=[c(2, 2, NOW - 2 * DAY), p(2, 3, NOW - 2 * DAY + 3_600_000)]),
        UserData(3, events=[c(3, 4, NOW - 3_600_000)]),
        UserData(4, events=[c(4, 5, NOW - 3 * DAY), p(4, 6, NOW - 3 * DAY)]),
    ]
    seq = {"type": "sequence", "first": CART, "then": BUY, "within": {"amount": 1, "unit": "days"}}
    assert members({**seq, "completed": True}, users) == {2}
    assert members({**seq, "completed": False}, users) == {1, 4}


def test_sequence_follow_bounds() -> None:
    """The then-event's bounds: after the first (not at it), at most `within` later (the end
    included), not after now; one first event answering is enough."""
    users = [
        UserData(1, events=[c(1, 1, NOW - 3 * DAY), p(1, 2, NOW - 2 * DAY)]),  # at the end of `within`
        UserData(2, events=[c(2, 3, NOW - 3 * DAY), p(2, 4, NOW - 2 * DAY + 1)]),  # just after it
        UserData(3, events=[c(3, 5, NOW - 3_600_000), p(3, 6, NOW + 60_000)]),  # then-event not yet due
        UserData(4, events=[c(4, 7, NOW - 5 * DAY), p(4, 8, NOW - 5 * DAY + 1), c(4, 9, NOW - 3 * DAY)]),
        UserData(5, events=[p(5, 10, NOW - 3 * DAY), c(5, 11, NOW - 2 * DAY)]),  # then before first
    ]
    seq = {"type": "sequence", "first": CART, "then": BUY, "within": {"amount": 1, "unit": "days"}}
    assert members({**seq, "completed": True}, users) == {1, 4}
    assert members({**seq, "completed": False}, users) == {2, 4, 5}


def test_profile_leaves() -> None:
    users = [
        UserData(1, identities={"email": "Ann@Example.com"}, consents={("gdpr", "marketing"): Consent(True, 1, 1)},
                 devices=[{"platform": "iOS"}, {"platform": "Android"}], last_seen=NOW - DAY,
                 attributes={"$intelligent_attribute:cortex:churn__score": 0.92}),
        UserData(2, device_ids={"ios_idfv": ["x1"]}, consents={("gdpr", "marketing"): Consent(False, 1, 1)},
                 devices=[{"platform": None}], last_seen=NOW - 8 * DAY,
                 attributes={"$intelligent_attribute:cortex:churn__score": 0.5}),
    ]  # fmt: skip
    assert members(
        {"type": "identity", "identity": "email", "op": "pattern", "value": "*@example.com"}, users
    ) == {1}
    assert members({"type": "identity", "identity": "email", "op": "not_exists"}, users) == {2}
    assert members({"type": "identity", "identity": "ios_idfv", "op": "exists"}, users) == {2}
    for state, expected in [
        ("consented", {1}),
        ("not_consented", {2}),
        ("present", {1, 2}),
        ("not_present", set()),
    ]:
        assert (
            members({"type": "consent", "regulation": "gdpr", "purpose": "Marketing", "state": state}, users)
            == expected
        )
    assert members({"type": "device", "field": "platform", "op": "equals", "value": "android"}, users) == {1}
    assert members({"type": "device", "field": "platform", "op": "not_exists"}, users) == {2}
    assert members(
        {"type": "last_seen", "op": "within_last", "value": {"amount": 7, "unit": "days"}}, users
    ) == {1}
    assert members(
        {"type": "prediction", "prediction": "churn", "measure": "score", "op": "greater_than", "value": 0.8},
        users,
    ) == {1}


def test_audience_and_parent_entry() -> None:
    users = [
        UserData(1, events=[ev(1, 1, NOW - DAY)]),
        UserData(2, events=[ev(2, 2, NOW - 5 * DAY)]),
        UserData(3),
    ]
    memberships = ((9, 1, NOW - 3 * DAY), (9, 2, NOW - 3 * DAY), (5, 3, NOW - 60_000))
    assert members({"type": "audience", "audience_id": 9, "member": True}, users, memberships) == {1, 2}
    assert members({"type": "audience", "audience_id": 5, "member": False}, users, memberships) == {1, 2}
    member_for = {
        "type": "audience",
        "audience_id": 5,
        "member": True,
        "member_for": {"amount": 1, "unit": "hours"},
    }
    assert members(member_for, users, memberships) == set()
    wait = {"all": [{"type": "parent_entry", "op": "more_than_ago", "value": {"amount": 2, "unit": "days"}},
                    {"not": {"type": "event", "event": WATCH, "window": {"since_parent_entry": True}}}]}  # fmt: skip
    assert members(wait, users, memberships, parent=9) == {2}
    assert members(wait, users, memberships) == set()


def test_calculated_attributes() -> None:
    users = [
        UserData(1, events=[ev(1, 1, NOW - 40 * DAY, attrs={"genre": "Jazz"}), ev(1, 2, NOW - DAY, attrs={"genre": "rock"}),
                            ev(1, 3, NOW - 2 * DAY, attrs={"genre": "jazz"})]),
        UserData(2, events=[ev(2, 4, NOW - 200 * DAY, attrs={"genre": "pop"})]),
        UserData(3),
    ]  # fmt: skip
    calcs = [
        {
            "name": "fav",
            "calculation": "most_frequent",
            "event": {"event_type": "custom_event"},
            "attribute": "genre",
        },
        {"name": "n", "calculation": "count", "event": {"event_type": "custom_event"}},
        {
            "name": "recent",
            "calculation": "count",
            "event": {"event_type": "custom_event"},
            "window": {"within": 7},
        },
        {
            "name": "genres",
            "calculation": "unique_list",
            "event": {"event_type": "custom_event"},
            "attribute": "genre",
        },
        {
            "name": "last",
            "calculation": "last_value",
            "event": {"event_type": "custom_event"},
            "attribute": "genre",
        },
        {"name": "first_at", "calculation": "first_timestamp", "event": {"event_type": "custom_event"}},
    ]

    def calc(name: str, op: str, **operands: Any) -> set[int]:
        return members(
            {"type": "calculated_attribute", "name": name, "op": op, **operands}, users, calculated=calcs
        )

    assert calc("fav", "equals", value="JAZZ") == {1}
    assert calc("n", "greater_or_equal", value=1) == {1, 2}  # not limited by the lookback
    assert calc("n", "equals", value=0) == {3}
    assert calc("recent", "equals", value=2) == {1}
    assert calc("genres", "includes", value="pop") == {2}
    assert calc("genres", "empty") == {3}
    assert calc("last", "equals", value="rock") == {1}
    assert calc("first_at", "before", value="2026-01-01") == {2}
