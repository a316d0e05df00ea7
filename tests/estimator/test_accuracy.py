"""The estimator against the truth (SPEC §5): 95% intervals cover the exact size in ≥ 93% of trials,
and the relative error is small enough for audiences of 1% and 10% of the base.

Two populations of 160,000 users (~5 events each, different MPIDs, hence two independent samples)
are bulk-loaded into fresh stores, with 100 distinct random audiences each. 160,000 is
chosen so that both sample targets used here land on the worst rung of the rate ladder (the
sample holds about exactly `target` users: 20,000 at rate 1/8, 40,000 at rate 1/4). Each trial is
a random audience (thresholds on attributes, event counts in windows, sums, sequences, negations,
all/any combinations) placed as a milestone under the journey root; its estimate is compared with
the exact size computed on the full store. Seeds are fixed: the run is deterministic.

Run with `-s` to see the observed coverage (with its own 95% Wilson interval) and the error
figures; they are also in every assertion message.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.estimator.audiences import Exact, one_milestone, random_criteria
from tests.estimator.population import DAY, LOOKBACK, T0, load_population

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.estimator import Estimator
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore

USERS = 160_000
TRIALS = 200
SEEDS = (11, 12)
TARGETS = (20_000, 40_000)
INPUTS = (1, 2)
LIFETIME = 365 * DAY  # the root is every user: "share of the base" is share of the population


@dataclass
class Trial:
    criteria: dict[str, Any]
    truth: int
    size: dict[str, Any]


@dataclass
class Run:
    target: int
    sample_size: int
    population: int
    trials: list[Trial] = field(default_factory=list)


@dataclass
class Population:
    store: DuckDBStore
    exact: Exact
    criteria: list[dict[str, Any]]
    truths: list[int]
    runs: dict[int, Run] = field(default_factory=dict)


@dataclass
class World:
    populations: list[Population]

    def trials(self, target: int) -> list[Trial]:
        return [t for p in self.populations for t in p.runs[target].trials]


def wilson95(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def run_estimator(pop: Population, target: int) -> Run:
    """Estimate every trial with a fresh estimator of this target (it rebuilds the shared `sample` schema)."""
    est = Estimator(pop.store.connect(), target=target)
    est.refresh()
    run = Run(target, est.sample.size, est.sample.population)
    for k, (crit, truth) in enumerate(zip(pop.criteria, pop.truths, strict=True)):
        audience = 10_000 + k
        out = est.journey(one_milestone(k + 1, audience, crit, INPUTS), {}, {}, T0, LOOKBACK, LIFETIME)
        run.trials.append(Trial(crit, truth, out[audience].size))
    est.close()  # stops the refresh worker before its parent connection closes
    est.con.close()
    return run


def distinct_criteria(seed: int, n: int) -> list[dict[str, Any]]:
    """`n` different random audiences (a repeated one would only repeat the same error)."""
    r = random.Random(seed)
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < n:
        c = random_criteria(r)
        seen.setdefault(json.dumps(c, sort_keys=True), c)
    return list(seen.values())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Two populations with different MPIDs, hence two independent samples, of TRIALS / 2 audiences each."""
    pops = []
    for seed in SEEDS:
        store = DuckDBStore(tmp_path_factory.mktemp(f"estimator{seed}") / "store")
        load_population(store.connect(), USERS, seed=seed)
        exact = Exact(store.connect(), inputs=INPUTS, now_ms=T0, lookback_ms=LOOKBACK, lifetime_ms=LIFETIME)
        criteria = distinct_criteria(20_261_128 + seed, TRIALS // len(SEEDS))
        pop = Population(store, exact, criteria, [exact.size(c) for c in criteria])
        for target in TARGETS:
            pop.runs[target] = run_estimator(pop, target)
        pops.append(pop)
    yield World(pops)
    for pop in pops:
        pop.exact.con.close()
        pop.store.close()


def test_exact_sizes_are_what_full_calculation_finds(world: World) -> None:
    """The reference sizes of these tests agree with the audience engine's own full calculation."""
    pop = world.populations[0]
    engine = AudienceEngine(pop.store.connect(), ManualClock(T0), EngineSettings(LOOKBACK, LIFETIME))
    picked = [0, 1, 2, 3, 5]  # a few trials, each as its own journey, calculated in one pass
    journeys = [one_milestone(k + 1, 10_000 + k, pop.criteria[k], INPUTS) for k in picked]
    _, members = engine.what_if(journeys, {}, [10_000 + k for k in picked], now=T0)
    engine.con.close()
    for k in picked:
        assert len(members[10_000 + k]) == pop.truths[k], pop.criteria[k]
    assert len(pop.exact.root) == USERS


def test_sample_is_a_real_subset_of_the_size_asked_for(world: World) -> None:
    for pop in world.populations:
        for target, run in pop.runs.items():
            print(f"\ntarget {target:,}: sample of {run.sample_size:,} of {run.population:,} users")
            assert run.population == USERS
            assert 0.97 * target <= run.sample_size < 1.03 * target, run.sample_size


def _coverage(world: World, target: int) -> tuple[int, int, list[Trial], str]:
    trials = world.trials(target)
    shown = [t for t in trials if t.size["kind"] == "estimate"]
    small = [t for t in trials if t.size["kind"] == "too_small"]
    assert len(shown) + len(small) == len(trials)
    assert all(not t.size["exact"] for t in shown)
    covered = sum(t.size["low"] <= t.truth <= t.size["high"] for t in shown)
    lo, hi = wilson95(covered, len(shown))
    per_pop = ", ".join(
        f"{sum(t.size['low'] <= t.truth <= t.size['high'] for t in p.runs[target].trials if t.size['kind'] == 'estimate')}"
        f"/{sum(t.size['kind'] == 'estimate' for t in p.runs[target].trials)}"
        for p in world.populations
    )
    samples = "/".join(f"{p.runs[target].sample_size:,}" for p in world.populations)
    bounded = sum(t.truth <= t.size["upper_bound"] for t in small)
    text = (
        f"target {target:,} (samples {samples} of {USERS:,}): the 95% interval covers the truth in "
        f"{covered}/{len(shown)} = {covered / len(shown):.1%} of estimates (per sample: {per_pop}; "
        f"95% Wilson interval of the coverage: {lo:.1%} - {hi:.1%}); too_small: {len(small)}, "
        f"upper bound >= truth in {bounded}"
    )
    return covered, len(shown), small, text


def test_interval_covers_the_truth_in_at_least_93_percent_of_trials(world: World) -> None:
    figures = {target: _coverage(world, target) for target in TARGETS}
    report = "\n".join(f[3] for f in figures.values())
    print("\n" + report)
    for covered, shown, small, _ in figures.values():
        assert covered >= 0.93 * shown, report
        assert all(t.truth <= t.size["upper_bound"] for t in small), report


def _error_figures(trials: list[Trial], share: float, limit: float) -> tuple[int, int, float]:
    """(trials with truth >= share of the base, of them within `limit` relative error, worst error)."""
    big = [t for t in trials if t.truth >= share * USERS]
    ok = 0
    worst = 0.0
    for t in big:
        assert t.size["kind"] == "estimate", t
        err = abs(t.size["value"] - t.truth) / t.truth
        worst = max(worst, err)
        ok += err <= limit
    return len(big), ok, worst


def test_relative_error_by_audience_size(world: World) -> None:
    """≤ 10% in ≥ 95% of trials for audiences ≥ 1% of the base, ≤ 3% for ≥ 10%, with the production
    sample target (40,000); the figures for a 20,000 sample are printed alongside for comparison."""
    lines = []
    for target in TARGETS:
        for share, limit in ((0.01, 0.10), (0.10, 0.03)):
            n, ok, worst = _error_figures(world.trials(target), share, limit)
            lines.append(
                f"target {target:,}: audiences >= {share:.0%} of the base: {ok}/{n} = {ok / n:.1%} within "
                f"{limit:.0%} relative error (worst {worst:.1%})"
            )
    report = "\n".join(lines)
    print("\n" + report)
    for share, limit in ((0.01, 0.10), (0.10, 0.03)):
        n, ok, _ = _error_figures(world.trials(40_000), share, limit)
        assert n >= 50, report  # enough trials of that size to mean something
        assert ok >= 0.95 * n, report


def test_estimates_do_not_depend_on_the_order_of_requests(world: World) -> None:
    """Re-estimating a few trials in reverse order, with a cold cache, gives the very same sizes."""
    pop = world.populations[-1]  # its sample (target 40,000) is the one currently built
    est = Estimator(pop.store.connect(), target=40_000)
    est.refresh()
    for k in reversed(range(10)):
        audience = 10_000 + k
        est._cache.clear()
        out = est.journey(
            one_milestone(k + 1, audience, pop.criteria[k], INPUTS), {}, {}, T0, LOOKBACK, LIFETIME
        )
        assert out[audience].size == pop.runs[40_000].trials[k].size
    est.close()  # stops the refresh worker before its parent connection closes
    est.con.close()
