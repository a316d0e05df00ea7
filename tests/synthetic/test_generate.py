"""Determinism, validity, ordering and streaming of generate()."""

from __future__ import annotations

import hashlib
import inspect
from collections import Counter
from typing import Any

import orjson
import pytest

from milepost.synthetic import InputPlan, WorkspacePlan, batch_problems, demo_layout, generate
from milepost.synthetic.behaviour import CUSTOM_EVENT_TYPES, EVENT_TYPES
from milepost.synthetic.ids import MpidSpace
from milepost.synthetic.population import DAY_MS, EPOCH_2000_MS

pytestmark = pytest.mark.unit

END_MS = 1_717_200_000_000  # 2024-06-01T00:00:00Z
USERS = 1500
DAYS = 14


@pytest.fixture(scope="module")
def dataset() -> list[tuple[str, dict[str, Any]]]:
    """A mid-sized run of the demo layout."""
    return list(generate(seed=7, users=USERS, days=DAYS, end_ms=END_MS))


def _digest(seed: int, users: int = 60, days: int = 5) -> str:
    h = hashlib.sha256()
    for name, batch in generate(seed=seed, users=users, days=days, end_ms=END_MS):
        h.update(name.encode())
        h.update(orjson.dumps(batch, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def test_same_seed_same_output_different_seed_different() -> None:
    assert _digest(1) == _digest(1)
    assert _digest(1) != _digest(2)
    assert _digest(-1) != _digest(1)


def test_demo_layout() -> None:
    layout = demo_layout()
    assert [ws.name for ws in layout] == ["Streaming", "Retail"]
    assert [(i.name, i.platform) for i in layout[0].inputs] == [
        ("web", "web"),
        ("ios", "ios"),
        ("android", "android"),
    ]
    assert [(i.name, i.platform) for i in layout[1].inputs] == [
        ("web_store", "web"),
        ("server", "server"),
        ("crm_feed", "feed"),
    ]


def test_every_batch_is_valid(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    names = {i.name for ws in demo_layout() for i in ws.inputs}
    problems = [(n, p) for n, (name, b) in enumerate(dataset) for p in batch_problems(b, end_ms=END_MS)]
    assert problems == []
    assert {name for name, _ in dataset} == names
    for _, batch in dataset:
        assert batch["events"], "every batch carries events"
        for e in batch["events"]:
            assert e["event_type"] in EVENT_TYPES
            ts = e["data"]["timestamp_unixtime_ms"]
            assert EPOCH_2000_MS <= ts < END_MS


def test_source_ids_are_unique(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    requests = [b["source_request_id"] for _, b in dataset]
    messages = [e["data"]["source_message_id"] for _, b in dataset for e in b["events"]]
    assert len(set(requests)) == len(requests)
    assert len(set(messages)) == len(messages)


def test_batches_in_time_order(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    firsts = [b["events"][0]["data"]["timestamp_unixtime_ms"] for _, b in dataset]
    assert firsts == sorted(firsts)
    assert firsts[0] >= END_MS - DAYS * DAY_MS - 5 * 60_000
    for _, b in dataset:
        ts = [e["data"]["timestamp_unixtime_ms"] for e in b["events"]]
        assert ts == sorted(ts)


def test_first_batch_per_user_and_input_carries_the_profile(
    dataset: list[tuple[str, dict[str, Any]]],
) -> None:
    seen: set[tuple[str, int]] = set()
    later_with_attrs = later = 0
    for name, b in dataset:
        k = (name, b["mpid"])
        if k in seen:
            later += 1
            later_with_attrs += "user_attributes" in b
            continue
        seen.add(k)
        assert "customer_id" in b["user_identities"]
        assert "plan" in b["user_attributes"]
        if name in ("web", "ios", "android", "web_store"):
            assert b["device_info"]["platform"] in ("iOS", "Android", "web")
            assert "application_info" in b
    assert 0 < later_with_attrs < 0.15 * later


def test_mpids_unique_non_zero_and_match_customer_ids(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    by_customer: dict[str, int] = {}
    for _, b in dataset:
        cid = b.get("user_identities", {}).get("customer_id")
        if cid:
            assert by_customer.setdefault(cid, b["mpid"]) == b["mpid"]
    assert len(set(by_customer.values())) == len(by_customer) > 0.9 * USERS
    space = MpidSpace(11)
    mpids = [space.mpid(i) for i in range(50_000)]
    assert 0 not in mpids and len(set(mpids)) == len(mpids)
    assert all(-(1 << 63) <= m < (1 << 63) for m in mpids)
    assert any(m < 0 for m in mpids) and any(m > 0 for m in mpids)


def _profiles(dataset: list[tuple[str, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for _, b in dataset:
        if "user_identities" in b and "user_attributes" in b and "country" in b["user_attributes"]:
            p = out.setdefault(b["mpid"], {"ids": b["user_identities"], "attrs": b["user_attributes"]})
            if "consent_state" in b:
                p.setdefault("consent", b["consent_state"])
    return out


def test_realistic_proportions(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    profiles = _profiles(dataset)
    n = len(profiles)
    assert n > 0.9 * USERS
    emails = [p["ids"]["email"] for p in profiles.values() if "email" in p["ids"]]
    assert 0.74 < len(emails) / n < 0.86
    mixed = sum(e != e.lower() for e in emails) / len(emails)
    assert 0.06 < mixed < 0.19
    assert 0.38 < sum("mobile_number" in p["ids"] for p in profiles.values()) / n < 0.52
    countries = Counter(p["attrs"]["country"] for p in profiles.values())
    assert 0.32 < countries["US"] / n < 0.44
    for p in profiles.values():
        a = p["attrs"]
        assert a["plan"] in ("free", "trial", "paid")
        assert 0.0 <= a["$intelligent_attribute:cortex:churn__score"] <= 1.0
        assert 1 <= a["$intelligent_attribute:cortex:churn__percentile"] <= 100
        assert isinstance(a["favourite_genres"], list) and 1 <= len(a["favourite_genres"]) <= 3
        assert a["signup_date"] >= "2015-01-01" and a["tenure_days"] >= 0
    paid = sum(p["attrs"]["plan"] == "paid" for p in profiles.values()) / n
    assert 0.2 < paid < 0.36
    gdpr = [p["consent"]["gdpr"] for p in profiles.values() if "gdpr" in p.get("consent", {})]
    ccpa = [p["consent"]["ccpa"] for p in profiles.values() if "ccpa" in p.get("consent", {})]
    assert gdpr and ccpa
    marketing = sum(g["marketing"]["consented"] for g in gdpr) / len(gdpr)
    personalisation = sum(g["personalisation"]["consented"] for g in gdpr) / len(gdpr)
    assert 0.45 < marketing < 0.65 and 0.62 < personalisation < 0.82
    assert 0.06 < sum(c["data_sale_opt_out"]["consented"] for c in ccpa) / len(ccpa) < 0.19


def test_event_mix_and_long_tailed_activity(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    types: Counter[str] = Counter()
    custom: Counter[str] = Counter()
    names: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    per_user: Counter[int] = Counter()
    first_runs = upgrades = 0
    shop: Counter[str] = Counter()
    for input_name, b in dataset:
        per_user[b["mpid"]] += len(b["events"])
        for e in b["events"]:
            d = e["data"]
            types[e["event_type"]] += 1
            if e["event_type"] == "custom_event":
                custom[d["custom_event_type"]] += 1
                names[d["event_name"]] += 1
            elif e["event_type"] == "commerce_event":
                actions[d["product_action"]["action"]] += 1
                if input_name == "web_store":
                    shop[d["product_action"]["action"]] += 1
            elif e["event_type"] == "application_state_transition":
                first_runs += d["is_first_run"]
                upgrades += d["is_upgrade"]
    assert set(types) == EVENT_TYPES
    assert set(custom) == CUSTOM_EVENT_TYPES
    for name in ("sign_up", "start_trial", "view_content", "watch_content", "save_content", "search"):
        assert names[name] > 0, name
    for name in ("open_email", "click_email"):
        assert names[name] > 0, name
    assert names["open_email"] > names["click_email"]
    assert set(actions) == {"add_to_cart", "remove_from_cart", "checkout", "purchase", "view_detail"}
    assert shop["view_detail"] > shop["add_to_cart"] > shop["checkout"] > shop["purchase"] > 0
    assert first_runs > 0 and upgrades > 0
    assert types["session_start"] == types["session_end"] or types["session_start"] > 0
    counts = sorted(per_user.values(), reverse=True)
    top_decile = sum(counts[: len(counts) // 10]) / sum(counts)
    assert top_decile > 0.3
    assert counts[len(counts) // 2] < sum(counts) / len(counts)


def test_purchase_amounts(dataset: list[tuple[str, dict[str, Any]]]) -> None:
    seen = 0
    for _, b in dataset:
        for e in b["events"]:
            pa = e["data"].get("product_action")
            if pa and pa["action"] == "purchase":
                seen += 1
                total = sum(p["price"] * p["quantity"] for p in pa["products"])
                assert pa["total_amount"] == round(total, 2) > 0
                assert isinstance(pa["transaction_id"], str) and pa["currency_code"]
    assert seen > 10


def test_generate_is_a_lazy_generator() -> None:
    gen = generate(seed=1, users=50_000, days=30, end_ms=END_MS)
    assert inspect.isgenerator(gen)
    first = []
    for item in gen:  # a day's schedule is planned, then batches flow out one by one
        first.append(item)
        if len(first) == 3:
            break
    gen.close()
    assert len(first) == 3


def test_memory_does_not_grow_with_users(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from milepost.synthetic import population

    monkeypatch.setattr(population, "CORE_CACHE_SIZE", 200)

    def peak(users: int) -> int:
        tracemalloc.start()
        for _ in generate(seed=5, users=users, days=1, end_ms=END_MS):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1_000), peak(5_000)
    # Only the bounded user cache and a day's schedule (one small tuple per batch) are held.
    assert large < 1.5 * small + 2 * 2**20


def test_custom_layout_and_bad_input() -> None:
    layout = [WorkspacePlan("Only", [InputPlan("app", "android"), InputPlan("backend", "server")])]
    out = list(generate(seed=2, users=40, days=3, end_ms=END_MS, layout=layout))
    assert out and {n for n, _ in out} <= {"app", "backend"}
    assert all(not batch_problems(b, end_ms=END_MS) for _, b in out)
    with pytest.raises(ValueError):
        InputPlan("x", "tv")
    with pytest.raises(ValueError):
        list(
            generate(
                seed=1,
                users=1,
                days=1,
                end_ms=END_MS,
                layout=[WorkspacePlan("a", [InputPlan("d", "web")] * 2)],
            )
        )
    with pytest.raises(ValueError):
        list(generate(seed=1, users=1, days=365 * 40, end_ms=END_MS))
