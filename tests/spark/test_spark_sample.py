"""The estimator's sample rebuilt on Spark is the sample rebuilt in the embedded store.

One population (MPIDs over the whole signed 64-bit range, profiles, events sealed into a segment
and a hot tail), its sample rebuilt once from DuckDB and once through Spark at the same rate: the
same users, the same rows in every sample table, the same estimates afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.estimator.audiences import WATCH, attr
from tests.estimator.population import LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences.estimator import Estimator
from milepost.audiences.sample import MODULUS, SAMPLE_TABLES, SampleSource
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.engines.duckdb import DuckDBStore
from milepost.engines.spark import SparkCalculator
from milepost.engines.spark_sample import SparkSampleSource

pytestmark = pytest.mark.spark

USERS = 3_000
HOT_ID = 10_000_000  # events of the hot tail have ids above this; sealed ones below


def add_profiles(store: DuckDBStore) -> None:
    """Identities, consents and devices for deterministic subsets of the users."""
    con = store.connect()
    for sql in (
        "INSERT INTO identities SELECT 'email', 'u' || mpid || '@example.com', mpid, "
        "'U' || mpid || '@Example.com', false, created_at FROM users WHERE hash(mpid) % 2 = 0",
        "INSERT INTO identities SELECT 'customer_id', 'c' || mpid, mpid, 'c' || mpid, false, created_at "
        "FROM users WHERE hash(mpid, 1) % 3 = 0",
        "INSERT INTO consents SELECT mpid, 'gdpr', 'marketing', hash(mpid, 2) % 3 > 0, created_at, "
        "created_at, 'v1', 'EU', NULL FROM users WHERE hash(mpid, 3) % 4 > 0",
        "INSERT INTO devices SELECT mpid, 'idfv:' || mpid, CASE WHEN hash(mpid, 4) % 2 = 0 THEN 'iOS' "
        "ELSE 'Android' END, '17.1', NULL, 'Acme', NULL, '2.0.' || (hash(mpid, 5) % 9), "
        "json_object('idfv', 'v' || mpid), created_at FROM users WHERE hash(mpid, 6) % 5 > 0",
    ):
        con.execute(sql).fetchall()
    con.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    store = DuckDBStore(tmp_path_factory.mktemp("sample") / "store")
    load_population(store.connect(), USERS, seed=11)
    add_profiles(store)
    assert store.seal(min_rows=1) > 0  # the events so far live in a Parquet segment
    con = store.connect()
    con.execute(  # and a hot tail: some of them again, later, under new ids
        f"INSERT INTO events SELECT * REPLACE (event_id + {HOT_ID} AS event_id, ts + 1000 AS ts) "
        "FROM events WHERE event_id % 3 = 0"
    ).fetchall()
    con.close()
    yield store
    store.close()


def journey() -> JourneyRows:
    def ms(
        mid: int, criteria: dict[str, Any] | None, parent: int | None = None, pos: int = 0
    ) -> MilestoneRow:
        return MilestoneRow(mid, 1, parent, pos, f"m{mid}", 100 + mid, criteria, criteria is None)

    watcher = {
        "type": "event",
        "event": WATCH,
        "having": {"fn": "count", "op": "greater_or_equal", "value": 2},
        "window": {"last": {"amount": 60, "unit": "days"}},
    }
    return JourneyRows(
        1,
        "j",
        (1, 2),
        (
            ms(1, {"all": [attr("score", "greater_than", 400), watcher]}, pos=0),
            ms(
                2,
                {"type": "consent", "regulation": "gdpr", "purpose": "marketing", "state": "consented"},
                pos=1,
            ),
            ms(3, None, pos=2),
            ms(4, {"type": "device", "field": "platform", "op": "equals", "value": "ios"}, parent=3, pos=0),
            ms(5, {"type": "identity", "identity": "email", "op": "exists"}, parent=3, pos=1),
        ),
    )


def rebuilt(store: DuckDBStore, target: int, source: SampleSource | None) -> dict[str, Any]:
    """Rebuild the sample at `target` (through `source`, if any); its tables, state and estimates."""
    con = store.connect()
    try:  # without a stored sample state, first use rebuilds rather than adopting the sample
        con.execute("DROP TABLE IF EXISTS sample.state").fetchall()
    finally:
        con.close()
    est = Estimator(store.connect(), target=target)
    est.sample.source = source
    try:
        est.refresh()  # first use: the rebuild
        sample = est.sample
        con = store.connect()
        tables = {t: con.execute(f"SELECT * FROM sample.{t} ORDER BY ALL").fetchall() for t in SAMPLE_TABLES}
        con.close()
        estimates = est.journey(journey(), {}, {}, T0, LOOKBACK, LIFETIME)
        return {
            "tables": tables,
            "state": (sample.threshold, sample.size, sample.population, sample.version, sample._event_id),
            "estimates": {
                a: (e.size, e.parent_share, e.criteria, e.members.tolist()) for a, e in estimates.items()
            },
        }
    finally:
        est.close()
        est.con.close()


class Recording:
    """A source that counts the selections it passes on."""

    def __init__(self, inner: SampleSource) -> None:
        self.inner = inner
        self.calls = 0

    def select(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner.select(*args)


@pytest.mark.parametrize(("target", "rate"), [(300, 1 / 8), (10_000, 1.0)], ids=["rate-1/8", "rate-1"])
def test_a_rebuild_on_spark_gives_the_same_sample_and_estimates(
    store: DuckDBStore, calculator: SparkCalculator, tmp_path: Path, target: int, rate: float
) -> None:
    on_duckdb = rebuilt(store, target, None)
    source = Recording(SparkSampleSource(calculator.session, tmp_path / "spark"))
    on_spark = rebuilt(store, target, source)
    assert source.calls == 1
    assert not list((tmp_path / "spark").iterdir())  # its files are gone once loaded

    threshold = on_duckdb["state"][0]
    assert threshold == (MODULUS if rate == 1 else int(MODULUS * rate))
    con = store.connect()
    everyone = [int(r[0]) for r in con.execute("SELECT mpid FROM users").fetchall()]
    con.close()
    # The key computed here, independently: Python's % is already the non-negative remainder.
    expected = sorted(m for m in everyone if ((m % MODULUS) * 7919 + 12345) % MODULUS < threshold)
    assert any(m < 0 for m in expected) and any(m > 0 for m in expected)
    for got in (on_duckdb, on_spark):
        assert sorted(int(r[0]) for r in got["tables"]["users"]) == expected
    if rate < 1:
        assert 0 < len(expected) < USERS // 2
    else:
        assert len(expected) == USERS

    for table in SAMPLE_TABLES:
        assert on_duckdb["tables"][table], f"sample.{table} is empty: the comparison would prove nothing"
        assert on_spark["tables"][table] == on_duckdb["tables"][table], table
    event_ids = [int(r[0]) for r in on_duckdb["tables"]["events"]]
    assert min(event_ids) < HOT_ID < max(event_ids)  # sealed and hot events both sampled
    assert on_spark["state"] == on_duckdb["state"]

    assert on_spark["estimates"] == on_duckdb["estimates"]
    hits = [e[0]["sample_hits"] for e in on_duckdb["estimates"].values()]
    assert all(h > 0 for h in hits), hits  # every criterion found someone in the sample


def test_a_failed_selection_leaves_the_sample_as_it_was(
    store: DuckDBStore, calculator: SparkCalculator, tmp_path: Path
) -> None:
    est = Estimator(store.connect(), target=300)
    try:
        est.refresh()
        sample = est.sample
        before = (sample.threshold, sample.size, sample.version)
        con = store.connect()
        rows = con.execute("SELECT count(*) FROM sample.events").fetchall()
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        sample.source = SparkSampleSource(calculator.session, blocked)  # nowhere to write
        sample.target = 10_000  # would change the rate
        with pytest.raises(OSError):
            sample.rebuild()
        assert (sample.threshold, sample.size, sample.version) == before
        assert con.execute("SELECT count(*) FROM sample.events").fetchall() == rows
        con.close()
    finally:
        est.close()
        est.con.close()


def test_the_runtime_rebuilds_the_sample_on_spark_when_spark_is_the_engine(
    monkeypatch: pytest.MonkeyPatch, spark: object, tmp_path: Path
) -> None:
    from milepost.config import Config
    from milepost.engines.base import open_sample_source
    from milepost.runtime import Runtime

    assert open_sample_source(None) is None
    monkeypatch.setenv("MILEPOST_ENGINE", "spark")
    monkeypatch.setenv("MILEPOST_SPARK_STORAGE", str(tmp_path / "parquet"))
    runtime = Runtime.open(Config.from_env(tmp_path / "data"))
    try:
        source = runtime.views.estimator.sample.source
        assert isinstance(source, SparkSampleSource)
        assert source.session is spark and source.storage == tmp_path / "parquet"
    finally:
        runtime.close()
    monkeypatch.setenv("MILEPOST_ENGINE", "duckdb")
    runtime = Runtime.open(Config.from_env(tmp_path / "data"))
    try:
        assert runtime.views.estimator.sample.source is None
    finally:
        runtime.close()
