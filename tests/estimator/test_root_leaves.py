"""A journey root evaluated in NumPy (`audiences.root_leaves`) gives exactly what its compiled query gives
on the sample, for any inputs, instant and lifetime (users never seen, odd input lists included)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.estimator.population import DAY, T0, load_population

from milepost.audiences.estimator import Estimator
from milepost.audiences.leaves import RootLeaf
from milepost.audiences.masks import SampleIndex
from milepost.audiences.root_leaves import load
from milepost.engines.duckdb import DuckDBStore


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estimator]:
    store = DuckDBStore(tmp_path_factory.mktemp("root_leaves") / "store")
    con = store.connect()
    load_population(con, 3_000, seed=23)
    con.execute("UPDATE main.users SET last_seen = NULL WHERE hash(mpid) % 13 = 0").fetchall()
    con.execute("UPDATE main.users SET inputs = [] WHERE hash(mpid) % 17 = 0").fetchall()
    con.execute("UPDATE main.users SET inputs = [3, NULL] WHERE hash(mpid) % 19 = 0").fetchall()
    con.execute("UPDATE main.users SET last_seen = ? WHERE hash(mpid) % 23 = 0", [T0 - 30 * DAY]).fetchall()
    con.close()
    est = Estimator(store.connect(), target=1_000)
    est.refresh()
    est._current()
    yield est
    est.close()
    est.con.close()
    store.close()


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.one_of(st.integers(-60 * DAY, 10 * DAY), st.integers(-60, 10).map(lambda d: d * DAY)),
    st.sampled_from([DAY, 30 * DAY, 90 * DAY]),
)
def test_roots_in_numpy_equal_the_compiled_query(
    est: Estimator, inputs: tuple[int, ...], shift: int, lifetime: int
) -> None:
    leaf = RootLeaf(inputs, lifetime)
    expected = est._index.mask(est._fetch(leaf.compiled(T0 + shift).sql))
    got = load(est.con, est._index).root(inputs, T0 + shift, lifetime)
    assert (got == expected).all()
    est._cache.clear()
    assert (est.root(inputs, T0 + shift, lifetime) == expected).all()  # as the estimator serves it
    # an index the sample has moved on from: users it lacks are left out, users it holds that are
    # not in the sample any more are nobody's members
    older = SampleIndex(np.append(est._index.mpids[::2], [-(2**62), 2**62]))
    expected_older = older.mask(est._fetch(leaf.compiled(T0 + shift).sql))
    assert (load(est.con, older).root(inputs, T0 + shift, lifetime) == expected_older).all()
