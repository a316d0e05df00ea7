"""What a commit writes: the JSON columns as sent, and the same user rows on either write path."""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from milepost.config import Config
from milepost.engines.duckdb import THREADS_PER_CORE, DuckDBStore
from milepost.errors import InvalidSetting
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.ingest.state import input_mask
from milepost.model.batch import IngestRequest

DAY = 86_400_000
T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)


def _apply(store: DuckDBStore, requests: list[tuple[int, int, list[dict[str, Any]]]], seed: int) -> None:
    """Commit (input, received_at, body) requests as one group."""
    reqs = [
        IngestRequest(i, at, normalize_request(body, bulk=True, historical=False, received_at=at)[0])
        for i, at, body in requests
    ]
    store.apply(build_plan(reqs, store, WINDOWS, random.Random(seed)))


Group = list[tuple[int, int, list[dict[str, Any]]]]


def _random_groups(
    rng: random.Random, batches: int, batch: Callable[[], dict[str, Any]], input_id: Callable[[], int]
) -> Iterator[tuple[int, Group]]:
    """60 group commits of 1-3 requests of 1-`batches` batches, a second or an hour apart."""
    at = T0
    for step in range(60):
        at += rng.choice([1_000, 3_600_000])
        group: Group = []
        for j in range(rng.randint(1, 3)):
            body = [batch() for _ in range(rng.randint(1, batches))]
            group.append((input_id(), at + j, body))
        yield step, group


def test_json_columns_hold_each_value_as_sent(tmp_path: Path) -> None:
    # Values holding what separates the values of one serialisation (newlines, commas, brackets).
    tricky = ["a\nb", ",\n,", "]\n[", "\u2028", "é", "{}", "[]", ""]
    events = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": f"e{i}",
                "custom_event_type": "other",
                "custom_attributes": {f"k{i}": s, "n": i, "f": 0.1 * i} if i % 3 else {},
                "note": s,
            },
        }
        for i, s in enumerate(tricky)
    ]
    events.append(
        {
            "event_type": "commerce_event",
            "data": {
                "product_action": {
                    "action": "purchase",
                    "total_amount": 12.5,
                    "products": [{"id": "p\n1", "price": 12.5, "quantity": 1}],
                },
                "currency_code": "EUR",
            },
        }
    )
    body = [{"mpid": 3, "events": events, "user_attributes": {"x": "1\n,\n,2"}}, {"mpid": 4}]
    store = DuckDBStore(tmp_path / "store")
    try:
        _apply(store, [(1, T0, body)], seed=1)
        rows = store._con.execute(
            "SELECT attrs::VARCHAR, products::VARCHAR, data::VARCHAR FROM events ORDER BY event_id"
        ).fetchall()
        sent, _ = normalize_request(body, bulk=True, historical=False, received_at=T0)
        expected = [
            (orjson.dumps(e.attrs), orjson.dumps(e.products), orjson.dumps(e.data, default=float))
            for e in sent[0].events
        ]
        assert [tuple(c.encode() for c in r) for r in rows] == expected
        assert sent[0].events[-1].total_amount == Decimal("12.5")
        bodies = store._con.execute("SELECT body::VARCHAR FROM batches ORDER BY seq").fetchall()
        # A body is the batch as sent but its events, which are the event rows above.
        assert [orjson.loads(b) for (b,) in bodies] == [
            {"mpid": 3, "user_attributes": {"x": "1\n,\n,2"}},
            {"mpid": 4},
        ]
        stored = store._con.execute("SELECT event_type, data::VARCHAR FROM events ORDER BY event_id")
        assert [{"event_type": t, "data": orjson.loads(d)} for t, d in stored.fetchall()] == events
        assert store.profile(3)["attributes"] == {"x": "1\n,\n,2"}
    finally:
        store.close()


def _users(store: DuckDBStore) -> list[tuple[Any, ...]]:
    rows = store._con.execute(
        "SELECT mpid, created_at, first_seen, last_seen, inputs, attributes::VARCHAR, updated_at "
        "FROM users ORDER BY mpid"
    ).fetchall()
    return [(*r[:5], orjson.loads(r[5]), r[6]) for r in rows]


def test_large_store_updates_leave_the_same_users_as_the_upsert(tmp_path: Path) -> None:
    rng = random.Random(5)
    upsert = DuckDBStore(tmp_path / "upsert")
    update = DuckDBStore(tmp_path / "update")
    update.large_users = 0  # every commit with known users takes the large-store path

    def batch() -> dict[str, Any]:
        b: dict[str, Any] = {"mpid": rng.randint(1, 12), "events": []}
        if rng.random() < 0.4:
            b["user_attributes"] = {rng.choice("abcd"): rng.choice([None, 1, "x", [1, 2], True])}
        if rng.random() < 0.1:
            b["deleted_user_attributes"] = [rng.choice("abcd")]
        if rng.random() < 0.1:
            b["environment"] = "development"
        return b

    try:
        for step, group in _random_groups(rng, 5, batch, lambda: rng.randint(1, 3)):
            for store in (upsert, update):
                _apply(store, group, seed=step)
            assert _users(update) == _users(upsert), f"step {step}"
        assert len(_users(upsert)) == 12
    finally:
        upsert.close()
        update.close()


def test_the_mirrored_user_ids_are_left_out_of_the_collectors_passes(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    try:
        _apply(store, [(1, T0, [{"mpid": 7, "events": []}])], seed=1)
        mpids = store._state().inputs_of
        assert 7 in mpids
        assert not any(o is mpids for o in gc.get_objects())  # frozen: no full pass walks it
    finally:
        store.close()


def test_users_only_seen_again_get_the_same_rows_as_the_upsert(tmp_path: Path) -> None:
    # Repeat sightings of the same users from the same inputs, now and then a new input or an attribute:
    # the commits whose known users change only scalar columns skip the upsert.
    rng = random.Random(8)
    scalar = DuckDBStore(tmp_path / "scalar")
    upsert = DuckDBStore(tmp_path / "upsert")
    upsert._state().lists_change = lambda plan: True  # type: ignore[method-assign]  # always the upsert
    taken = []
    lists_change = scalar._state().lists_change
    scalar._state().lists_change = lambda plan: taken.append(lists_change(plan)) or taken[-1]  # type: ignore[method-assign]

    def batch() -> dict[str, Any]:
        b: dict[str, Any] = {"mpid": rng.randint(1, 15), "events": []}
        if rng.random() < 0.1:
            b["user_attributes"] = {rng.choice("ab"): rng.choice([None, 1, "x"])}
        if rng.random() < 0.1:
            b["environment"] = "development"
        return b

    try:
        for step, group in _random_groups(
            rng, 4, batch, lambda: 1 if rng.random() < 0.9 else rng.randint(2, 3)
        ):
            for store in (scalar, upsert):
                _apply(store, group, seed=step)
            assert _users(scalar) == _users(upsert), f"step {step}"
            assert scalar._state().inputs_of == {u[0]: input_mask(u[4]) for u in _users(scalar)}
        assert taken.count(False) >= 10 and taken.count(True) >= 10
    finally:
        scalar.close()
        upsert.close()


def test_the_store_runs_two_duckdb_threads_per_core_unless_given_a_number(tmp_path: Path) -> None:
    def threads(store: DuckDBStore) -> int:
        try:
            return int(store.reader().execute("SELECT current_setting('threads')").fetchall()[0][0])
        finally:
            store.close()

    default = int(duckdb.connect().execute("SELECT current_setting('threads')").fetchall()[0][0])
    assert threads(DuckDBStore(tmp_path / "default")) == THREADS_PER_CORE * default
    assert threads(DuckDBStore(tmp_path / "one", threads=1)) == 1


def test_store_threads_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEPOST_STORE_THREADS", "1")
    assert Config.from_env(tmp_path).store_threads == 1
    monkeypatch.delenv("MILEPOST_STORE_THREADS")
    assert Config.from_env(tmp_path).store_threads is None
    for bad in ("two", "0", "-1", "1.5"):
        monkeypatch.setenv("MILEPOST_STORE_THREADS", bad)
        with pytest.raises(InvalidSetting, match="MILEPOST_STORE_THREADS"):
            Config.from_env(tmp_path)
