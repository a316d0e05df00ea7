"""Estimates are stable and consistent (SPEC §5): the same criteria give the same number, a criterion
that keeps everyone changes nothing, siblings and the remaining split add up to their parent,
estimates below a calculated ancestor are scaled from its actual size and never exceed it, and a
small account (sample = everyone) is estimated exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.estimator.audiences import WATCH, attr
from tests.estimator.population import LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.sample import MODULUS, sample_key
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore

USERS = 60_000
TARGET = 5_000
INPUTS = (1, 2)

HIGH_SCORE = attr("score", "greater_than", 600)
ADULT = {"type": "user_attribute", "attribute": "age", "op": "between", "min": 30, "max": 55}
WATCHER = {
    "type": "event",
    "event": WATCH,
    "having": {"fn": "count", "op": "greater_or_equal", "value": 2},
    "window": {"last": {"amount": 60, "unit": "days"}},
}
SEARCH_THEN_WATCH = {
    "type": "sequence",
    "first": {"event_type": "custom_event", "name": "search"},
    "then": WATCH,
    "within": {"amount": 14, "unit": "days"},
    "completed": True,
}
NOT_GOLD = {"not": attr("tier", "equals", "gold")}
NEWSLETTER = attr("newsletter", "equals", True)


def milestone(
    mid: int, criteria: dict[str, Any] | None, parent: int | None = None, pos: int = 0, journey: int = 1
) -> MilestoneRow:
    return MilestoneRow(mid, journey, parent, pos, f"m{mid}", 100 + mid, criteria, criteria is None)


def journey(*milestones: MilestoneRow, journey_id: int = 1) -> JourneyRows:
    return JourneyRows(journey_id, f"j{journey_id}", INPUTS, milestones)


@dataclass
class World:
    store: DuckDBStore
    est: Estimator

    def estimate(self, j: JourneyRows, actual: dict[int, int] | None = None) -> dict[int, NodeEstimate]:
        return self.est.journey(j, {}, actual or {}, T0, LOOKBACK, LIFETIME)

    def size(self, criteria: dict[str, Any]) -> dict[str, Any]:
        return self.estimate(journey(milestone(1, criteria)))[101].size


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    store = DuckDBStore(tmp_path_factory.mktemp("stability") / "store")
    load_population(store.connect(), USERS, seed=3)
    est = Estimator(store.connect(), target=TARGET)
    est.refresh()
    assert not est.sample.exact and TARGET <= est.sample.size < USERS  # a real subset
    yield World(store, est)
    est.close()  # stops the refresh worker before its parent connection closes
    est.con.close()
    store.close()


def numbers(size: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(size.get(k) for k in ("kind", "value", "low", "high", "sample_hits", "sample_size"))


def test_the_same_criteria_give_the_same_number(world: World) -> None:
    crit = {"all": [HIGH_SCORE, WATCHER, SEARCH_THEN_WATCH]}
    first = world.size(crit)
    assert first["kind"] == "estimate" and not first["exact"]
    assert world.size(crit) == first  # cached
    world.est._cache.clear()
    assert world.size(crit) == first  # recomputed
    con = world.store.connect()
    con.execute("DELETE FROM sample.state").fetchall()  # not adopted: drawn again
    con.close()
    other = Estimator(world.store.connect(), target=TARGET)  # a new estimator draws the same sample
    try:
        assert other.journey(journey(milestone(1, crit)), {}, {}, T0, LOOKBACK, LIFETIME)[101].size == first
    finally:
        other.close()  # stops the refresh worker before its parent connection closes
        other.con.close()
        world.est.sample.rebuild()  # the other one rebuilt the shared schema; bring ours back in step


def test_editing_one_criterion_leaves_the_others_rows_alone(world: World) -> None:
    before = world.estimate(journey(milestone(1, {"all": [HIGH_SCORE, WATCHER, ADULT]})))[101]
    after = world.estimate(journey(milestone(1, {"all": [HIGH_SCORE, WATCHER, NEWSLETTER]})))[101]
    assert [r["size"] for r in before.criteria[:2]] == [r["size"] for r in after.criteria[:2]]
    assert before.criteria[2]["size"] != after.criteria[2]["size"]


@pytest.mark.parametrize(
    "always", [{"all": []}, {"not": {"any": []}}, {"any": [NEWSLETTER, {"not": NEWSLETTER}]}], ids=str
)
def test_a_criterion_that_keeps_everyone_changes_nothing(world: World, always: dict[str, Any]) -> None:
    base = [HIGH_SCORE, WATCHER, NOT_GOLD]
    plain = world.estimate(journey(milestone(1, {"all": base})))[101]
    padded = world.estimate(journey(milestone(1, {"all": [*base, always]})))[101]
    assert numbers(padded.size) == numbers(plain.size)
    assert [r["size"] for r in padded.criteria[:3]] == [r["size"] for r in plain.criteria]
    # its own row is the whole eligible set: the root
    root_all = world.size({"all": []})
    assert numbers(padded.criteria[3]["size"]) == numbers(root_all)
    # a single leaf and the same leaf alone in a group are one and the same
    assert numbers(world.size(WATCHER)) == numbers(world.size({"all": [WATCHER]}))


def _tree() -> JourneyRows:
    return journey(
        milestone(1, NOT_GOLD, pos=0),  # parent P
        milestone(2, HIGH_SCORE, parent=1, pos=0),  # A
        milestone(3, {"all": [ADULT, WATCHER]}, parent=1, pos=1),  # B
        milestone(4, {"any": [SEARCH_THEN_WATCH, NEWSLETTER]}, parent=1, pos=2),  # C
        milestone(5, None, parent=1, pos=3),  # remaining under P
        milestone(6, WATCHER, parent=2, pos=0),  # below A
        milestone(7, NEWSLETTER, pos=1),  # a sibling of P
        milestone(8, None, pos=2),  # remaining under the root
    )


def test_siblings_and_the_remaining_split_add_up_to_their_parent(world: World) -> None:
    est = world.estimate(_tree())
    hits = {a: e.size["sample_hits"] for a, e in est.items()}
    value = {a: e.size["value"] for a, e in est.items() if e.size["kind"] == "estimate"}
    assert hits[102] + hits[103] + hits[104] + hits[105] == hits[101]
    assert abs(value[102] + value[103] + value[104] + value[105] - value[101]) <= 2  # rounding only
    root = world.size({"all": []})
    assert hits[101] + hits[107] + hits[108] == root["sample_hits"]
    assert abs(value[101] + value[107] + value[108] - root["value"]) <= 2
    # exclusivity: B's rows count only users of P not taken by A
    eligible_b = hits[101] - hits[102]
    assert all(r["size"]["sample_hits"] <= eligible_b for r in est[103].criteria)
    assert est[105].criteria == []  # a remaining split shows no breakdown
    for child, parent in ((102, 101), (103, 101), (104, 101), (105, 101), (106, 102)):
        assert value[child] <= value[parent]
        assert est[child].parent_share == pytest.approx(hits[child] / hits[parent])


def test_below_a_calculated_ancestor_estimates_scale_from_its_actual_size(world: World) -> None:
    tree = _tree()
    engine = AudienceEngine(world.store.connect(), ManualClock(T0), EngineSettings(LOOKBACK, LIFETIME))
    try:
        engine.configure([tree], {}, maintained=frozenset({101}))
        engine.full_calculation()
        actual = engine.size(101)
    finally:
        engine.con.close()
    plain = world.estimate(tree)
    assert plain[101].size["value"] != actual  # the sample's own estimate differs: scaling is visible
    est = world.estimate(tree, {101: actual})
    p_hits = est[101].size["sample_hits"]
    total = 0
    for a in (102, 103, 104, 105):
        s = est[a].size
        assert s["kind"] == "estimate", s
        assert s["sample_size"] == p_hits  # a share of the ancestor's sampled members
        assert s["value"] == round(actual * s["sample_hits"] / p_hits)
        assert s["value"] <= actual and s["high"] <= actual and s["low"] >= 0, s
        total += s["value"]
    assert abs(total - actual) <= 2
    below = est[106].size  # two levels down: still scaled from the same ancestor
    assert below["value"] <= est[102].size["value"] <= actual
    assert below["sample_size"] == p_hits
    for row in est[103].criteria:
        assert row["size"]["high"] <= actual
    # siblings of the calculated audience are not affected by it
    assert numbers(est[107].size) == numbers(plain[107].size)


def test_the_sample_is_nested_when_the_population_grows(tmp_path: Path) -> None:
    """A lower rate keeps a subset of the users a higher one kept: estimates do not jump on a rebuild."""
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    load_population(con, 12_000, seed=9)
    first_users = {int(r[0]) for r in con.execute("SELECT mpid FROM main.users").fetchall()}
    est = Estimator(store.connect(), target=2_000)
    est.refresh()
    before = {int(r[0]) for r in con.execute("SELECT mpid FROM sample.users").fetchall()}
    threshold = est.sample.threshold
    load_population(con, 36_000, seed=9, first=12_000)
    est.sample.rebuild()
    after = {int(r[0]) for r in con.execute("SELECT mpid FROM sample.users").fetchall()}
    assert est.sample.threshold < threshold
    assert after & first_users <= before  # no user of the old population joins the sample
    assert 0 < len(after & first_users) < len(before)
    key = sample_key("mpid")
    outside = con.execute(
        f"SELECT count(*) FROM sample.users WHERE {key} >= {est.sample.threshold}"
    ).fetchall()
    assert outside[0][0] == 0 and est.sample.threshold < MODULUS
    est.close()  # stops the refresh worker before its parent connection closes
    est.con.close()
    con.close()
    store.close()


def test_a_small_account_is_estimated_exactly(tmp_path: Path) -> None:
    """Below the target the sample is everyone: every size, rows included, is exact and equal to
    the full calculation, even for audiences of a handful of users (no `too_small`)."""
    store = DuckDBStore(tmp_path / "store")
    load_population(store.connect(), 3_000, seed=5)
    est = Estimator(store.connect())  # production target: 40,000
    engine = AudienceEngine(store.connect(), ManualClock(T0), EngineSettings(LOOKBACK, LIFETIME))
    tiny = {"all": [attr("vip", "equals", True), attr("tier", "equals", "gold")]}
    tree = journey(
        milestone(1, {"all": [HIGH_SCORE, WATCHER, SEARCH_THEN_WATCH, NOT_GOLD]}, pos=0),
        milestone(2, tiny, pos=1),
        milestone(3, None, pos=2),
        milestone(4, {"any": [ADULT, NEWSLETTER]}, parent=3),
    )
    try:
        out = est.journey(tree, {}, {}, T0, LOOKBACK, LIFETIME)
        assert est.sample.exact and est.sample.size == 3_000
        _, members = engine.what_if([tree], {}, [101, 102, 103, 104], now=T0)
        for a in (101, 102, 103, 104):
            s = out[a].size
            assert s["kind"] == "estimate" and s["exact"] is True, s
            assert s["value"] == s["low"] == s["high"] == len(members[a]), (a, s)
        assert out[102].size["value"] < 10  # small, yet exact rather than too_small
        # each row: eligible (the root) and that criterion alone, exactly
        for k, part in enumerate([HIGH_SCORE, WATCHER, SEARCH_THEN_WATCH, NOT_GOLD]):
            alone = journey(milestone(9, part), journey_id=2)
            _, m = engine.what_if([alone], {}, [109], now=T0)
            row = out[101].criteria[k]
            assert row["criterion"] == part
            assert row["size"]["exact"] is True and row["size"]["value"] == len(m[109])
    finally:
        est.close()  # stops the refresh worker before its parent connection closes
        est.con.close()
        engine.con.close()
        store.close()
