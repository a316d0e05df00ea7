"""The columns estimates read (events, users' last seen and inputs, attribute values) are carried
from one version of the sample to the next, only the changed users' rows read again. After rounds of
ingest (sampled users with new events, new event names, documents, inputs and attribute values;
users new to the sample), estimates equal those of an estimator built from scratch on the same
store, whether served from patched masks or recomputed over the carried columns."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.estimator.audiences import HOME, PURCHASE, SEARCH, WATCH, attr, last, random_criteria
from tests.estimator.population import DAY, LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences import demand, estimator
from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.event_columns import load, update
from milepost.audiences.event_leaves import evaluate, event_plan
from milepost.audiences.masks import SampleIndex
from milepost.audiences.root_leaves import load as load_users
from milepost.audiences.root_leaves import update as update_users
from milepost.audiences.sample import MODULUS
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.criteria import CompileContext, parse_criteria
from milepost.criteria.core import lower
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

BINGE = {"event_type": "custom_event", "name": "binge"}  # a name only ingest brings
CRITERIA: list[dict[str, Any]] = [
    attr("score", "greater_than", 300),
    attr("tier", "equals", "platinum"),  # a value only ingest brings
    {"type": "user_attribute", "attribute": "country", "op": "in", "values": ["US", "FR"]},
    {"type": "event", "event": WATCH, "having": {"fn": "count", "op": "greater_or_equal", "value": 2}, "window": last(30)},
    {"type": "event", "event": WATCH, "where": [{"attribute": "genre", "op": "equals", "value": "anime"}], "window": last(60)},
    {"type": "event", "event": PURCHASE, "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 150}},
    {"type": "sequence", "first": SEARCH, "then": BINGE, "within": {"amount": 7, "unit": "days"}, "completed": True, "window": last(90)},
    {"not": {"type": "event", "event": HOME, "window": last(7)}},
    {"type": "event", "event": BINGE, "having": {"fn": "count", "op": "greater_or_equal", "value": 3}},
]  # fmt: skip
INPUTS = [(1, 2), (3,), (1, 2, 3)]
PATHS = ['$."score"', '$."tier"', '$."country"', '$."signup"']


def _store(path: Path, users: int, seed: int) -> DuckDBStore:
    """A store holding a population, opened again so ingest numbers its events after the population's."""
    store = DuckDBStore(path)
    con = store.connect()
    load_population(con, users, seed=seed)
    con.close()
    store.close()
    return DuckDBStore(path)


@contextmanager
def _estimator(path: Path, users: int, seed: int, target: int) -> Iterator[tuple[DuckDBStore, Estimator]]:
    """A store holding a population and an estimator over it (a real subset: `target` < `users`)."""
    store = _store(path, users, seed)
    est = Estimator(store.connect(), target=target)
    try:
        yield store, est
    finally:
        est.close()
        est.con.close()
        store.close()


def _rebuilt(store: DuckDBStore, target: int) -> Estimator:
    """An estimator whose sample is built from scratch: the stored one's state is dropped, so the
    new estimator rebuilds rather than adopting it."""
    con = store.connect()
    try:
        con.execute("DELETE FROM sample.state").fetchall()
    finally:
        con.close()
    return Estimator(store.connect(), target=target)


def _journey(criteria: dict[str, Any], inputs: tuple[int, ...]) -> JourneyRows:
    return JourneyRows(
        1,
        "j",
        inputs,
        (
            MilestoneRow(1, 1, None, 0, "a", 101, criteria, False),
            MilestoneRow(2, 1, None, 1, "rest", 102, None, True),
        ),
    )


def _event(rng: random.Random) -> dict[str, Any]:
    ts = T0 - rng.randrange(20 * DAY)
    if rng.random() < 0.2:
        action = {"action": "purchase", "total_amount": rng.choice([0.5, 49.999999999, 120, 1999.25])}
        return {
            "event_type": "commerce_event",
            "data": {"timestamp_unixtime_ms": ts, "product_action": action},
        }
    return {
        "event_type": "custom_event",
        "data": {
            "event_name": rng.choice(["watch", "search", "binge", f"new{rng.randrange(3)}"]),
            "custom_event_type": rng.choice(["media", "social", "other"]),
            "timestamp_unixtime_ms": ts,
            "custom_attributes": {"genre": rng.choice(["drama", "anime"]), "minutes": rng.randrange(500)},
        },
    }


def _ingest(store: DuckDBStore, mpids: list[int], seed: int) -> None:
    rng = random.Random(seed)
    batches = []
    for mpid in mpids:
        batch: dict[str, Any] = {"mpid": mpid, "environment": "production"}
        batch["events"] = [_event(rng) for _ in range(rng.randrange(0, 4))]
        if rng.random() < 0.5:  # a profile change
            batch["user_attributes"] = {
                "score": rng.randrange(1000),
                "tier": rng.choice(["gold", "platinum", None]),
                "country": rng.choice(["US", "DE", "BR"]),
            }
        batches.append(batch)
    windows = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)
    for first in range(0, len(batches), 100):  # the most one request holds
        normalized, _ = normalize_request(
            batches[first : first + 100], bulk=True, historical=False, received_at=T0 - 1_000
        )
        request = IngestRequest(rng.choice([1, 2, 3]), T0 - 1_000, normalized)
        store.apply(build_plan([request], store, windows, random.Random(seed)))


def _estimates(est: Estimator, criteria: list[dict[str, Any]]) -> list[dict[int, NodeEstimate]]:
    return [
        est.journey(_journey(c, inputs), {}, {}, T0, LOOKBACK, LIFETIME)
        for c in criteria
        for inputs in INPUTS
    ]


def _same(got: list[dict[int, NodeEstimate]], expected: list[dict[int, NodeEstimate]]) -> None:
    for g, e in zip(got, expected, strict=True):
        for a in (101, 102):
            assert g[a].size == e[a].size and g[a].criteria == e[a].criteria
            assert (g[a].members == e[a].members).all()


@pytest.mark.parametrize("seed", [3, 11])
def test_estimates_over_carried_columns_equal_estimates_from_scratch(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(estimator, "CACHE_TTL_MS", 3_600_000)  # no entry expires during the test
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 60_000)  # each estimate waits for the worker
    r = random.Random(seed)
    criteria = CRITERIA + [random_criteria(r) for _ in range(4)]
    with _estimator(tmp_path_factory.mktemp("incremental") / "store", 8_000, seed, 2_000) as (store, est):
        _estimates(est, criteria)  # every column read once
        for path in PATHS:
            est._path_values(path, est.con, est._view)
        assert not est.sample.exact
        events = est._view.events
        assert events is not None and est._view.users is not None and est._view.paths
        log = events.log
        initial = len(est._index)
        for round_ in range(5):
            sampled = sorted(int(m) for m in est._index.mpids)
            picked = r.sample(sampled, 40) + [r.randrange(-(2**62), 2**62) for _ in range(60)]
            _ingest(store, picked, 100 * seed + round_)
            version = est.sample.version
            served = _estimates(est, criteria)  # patched masks
            assert est.sample.version > version
            assert est.sample.size == est.con.execute("SELECT count(*) FROM sample.users").fetchall()[0][0]
            events = est._view.events
            assert events is not None and events.log is log  # carried over, not read again
            est._cache.clear()
            carried = _estimates(est, criteria)  # recomputed over the carried columns
            assert est._view.events is events
            fresh_est = _rebuilt(store, 2_000)
            try:
                fresh = _estimates(fresh_est, criteria)
                assert (fresh_est._index.mpids == est._index.mpids).all()
                for path in PATHS:  # each user's value, whatever its code
                    got, want = (
                        est._view.paths[path],
                        fresh_est._path_values(path, fresh_est.con, fresh_est._view),
                    )
                    assert got.values.take(got.codes).to_pylist() == want.values.take(want.codes).to_pylist()
            finally:
                fresh_est.close()
                fresh_est.con.close()
            _same(served, fresh)
            _same(carried, fresh)
        assert est._view.events is not None and est._view.events.live is not None  # some events replaced
        assert len(est._index) > initial  # users new to the sample came in
        binge = _journey({"type": "event", "event": BINGE}, (1, 2, 3))
        assert est.journey(binge, {}, {}, T0, LOOKBACK, LIFETIME)[101].size["sample_hits"] > 0


def test_columns_updated_from_older_ones_equal_columns_read_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Updating columns that are not their buffers' latest, or mostly replaced, gives what `load` reads."""
    with _estimator(tmp_path_factory.mktemp("updates") / "store", 3_000, 29, 1_000) as (store, est):
        est.refresh()
        est._current()
        con, index = est.con, est._index
        first = load(con, index)
        plans = [event_plan(lower(parse_criteria(c), {})) for c in CRITERIA]
        ctx = CompileContext(now_ms=T0, lookback_ms=LOOKBACK, input_ids=(1, 2, 3), parent_audience_id=-1)
        r = random.Random(7)
        mpids = [int(m) for m in index.mpids]
        cols, compacted = first, 0
        for k in range(6):
            version = est.sample.version
            _ingest(store, r.sample(mpids, 1_200 if k % 2 else 30), 500 + k)
            est.sample.refresh()
            changed = est.sample.changed_since(version)
            assert changed is not None and changed.shape[0] > 0
            now = SampleIndex(np.asarray(con.execute("SELECT mpid FROM sample.users").fetchnumpy()["mpid"]))
            expected = load(con, now)
            got, appended = update(con, cols, index, now, changed)  # the latest columns of their buffers
            again, _ = update(con, cols, index, now, changed)  # no longer the latest
            for plan in plans:
                if plan is not None:
                    want = evaluate(con, expected, len(now), plan, ctx)
                    assert (evaluate(con, got, len(now), plan, ctx) == want).all()
                    assert (evaluate(con, again, len(now), plan, ctx) == want).all()
                    rows = now.positions(changed)  # the changed users' members from their events alone
                    assert (evaluate(con, appended, len(now), plan, ctx)[rows] == want[rows]).all()
            assert again.log is not got.log
            compacted += got.log is not cols.log
            cols, index = got, now
        assert compacted  # mostly replaced events were dropped on the way


def test_user_columns_updated_equal_columns_read_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Changed users' last seen times and inputs are replaced, not merged; users gone are dropped."""
    with _estimator(tmp_path_factory.mktemp("users") / "store", 3_000, 31, 1_000) as (_, est):
        est.refresh()
        est._current()
        con, index = est.con, est._index
        cols = load_users(con, index)
        r = random.Random(9)
        picked = r.sample([int(m) for m in index.mpids], 200)
        changed = np.asarray(
            sorted(picked + [r.randrange(-(2**62), 2**62) for _ in range(5)]), dtype=np.int64
        )
        con.execute(
            f"UPDATE sample.users SET last_seen = NULL WHERE mpid IN ({','.join(map(str, picked[:50]))})"
        )
        con.execute(
            f"UPDATE sample.users SET inputs = [3] WHERE mpid IN ({','.join(map(str, picked[50:100]))})"
        )
        con.execute(
            f"UPDATE sample.users SET last_seen = 1 WHERE mpid IN ({','.join(map(str, picked[100:150]))})"
        )
        con.execute(f"DELETE FROM sample.users WHERE mpid IN ({','.join(map(str, picked[150:]))})")
        table = con.sql(
            f"SELECT mpid, last_seen, inputs FROM sample.users WHERE mpid IN ({','.join(map(str, changed))})"
        ).to_arrow_table()
        now = index.with_users(changed, np.asarray(table.column("mpid").to_numpy(), dtype=np.int64))
        assert len(now) == len(index) - 50
        got, want = update_users(cols, index, now, changed, table), load_users(con, now)
        for inputs in [(1,), (2,), (3,), (1, 2, 3)]:
            for shift in (-100 * DAY, -10 * DAY, 0):
                assert (
                    got.root(inputs, T0 + shift, LIFETIME) == want.root(inputs, T0 + shift, LIFETIME)
                ).all()


def test_ingest_of_unsampled_users_only_moves_the_sample_on(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of users outside the sample leave its version (and so the cached masks) as they were,
    yet the next estimate holds them (the population grew) and equals a fresh estimator's."""
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 60_000)  # each estimate waits for the worker
    with _estimator(tmp_path_factory.mktemp("unsampled") / "store", 4_000, 5, 1_000) as (store, est):
        _estimates(est, CRITERIA[:3])
        version, size, population = est.sample.version, est.sample.size, est.sample.population
        threshold = est.sample.threshold
        rng = random.Random(5)
        outside = [
            m
            for m in (rng.randrange(-(2**62), 2**62) for _ in range(400))
            if ((m % MODULUS) * 7919 + 12345) % MODULUS >= threshold
        ]
        _ingest(store, outside, 7)
        served = _estimates(est, CRITERIA[:3])
        assert est.sample.version == version and est.sample.size == size
        assert est.sample.population > population
        # read on the estimates' connection: the sample's own is the worker thread's
        assert est.sample.batch_seq == est.sample.latest_batch(est.con) > 0
        fresh_est = _rebuilt(store, 1_000)
        try:
            _same(served, _estimates(fresh_est, CRITERIA[:3]))
        finally:
            fresh_est.close()
            fresh_est.con.close()


def test_the_first_estimate_after_a_quiet_spell_waits_for_the_sample_to_catch_up(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no estimate for a while nothing refreshes the sample in the background; the next estimate
    still sees every batch accepted before it, even when estimates otherwise never wait."""
    monkeypatch.setattr(estimator, "REFRESH_WAIT_MS", 0)
    criteria = CRITERIA[:4]
    with _estimator(tmp_path_factory.mktemp("quiet") / "store", 4_000, 5, 1_000) as (store, est):
        assert est.wants_refresh()  # to build the sample
        _estimates(est, criteria)
        assert est.wants_refresh()  # estimates were asked for just now
        monkeypatch.setattr(demand, "ACTIVE_S", 0.0)  # ... and now a quiet spell has passed
        assert not est.wants_refresh()
        sampled = sorted(int(m) for m in est._index.mpids)
        _ingest(store, sampled[:50] + [-(2**61) + i for i in range(50)], 7)
        version = est.sample.version
        served = _estimates(est, criteria)
        assert est.sample.version > version
        con = store.connect()  # the sample's connection may be busy with the worker
        try:
            assert est._covered == con.execute("SELECT max(seq) FROM batches").fetchall()[0][0]
        finally:
            con.close()
        fresh_est = _rebuilt(store, 1_000)
        try:
            _same(served, _estimates(fresh_est, criteria))
        finally:
            fresh_est.close()
            fresh_est.con.close()
