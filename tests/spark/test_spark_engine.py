"""Engine-level parity: the same compiled criteria and the same journey trees on DuckDB and Spark.

Operators (SPEC §4.2) run as one query per engine over every case of the criteria semantics table;
journey trees run as full calculations through the audience engine with and without the Spark
calculator, including events sealed into Parquet segments.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.criteria import CompileContext, compile_many, parse_criteria, to_sql
from milepost.criteria.dialect import SPARK
from milepost.criteria.reference import UserData
from milepost.engines.duckdb import DuckDBStore
from milepost.engines.spark import SparkCalculator
from milepost.engines.spark_export import TABLES, Snapshot, export_table
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "criteria"))
from criteria_store import load
from test_semantics import CASES, LOOKBACK, NOW

pytestmark = pytest.mark.spark

DAY = 86_400_000
T0 = 1_780_315_200_000  # 2026-06-01T12:00Z
WINDOWS = DedupeWindows(30 * DAY, 7 * DAY)
STRIDE = 100  # case k's users are k * STRIDE + 1, + 2, ...


def test_every_operator_case_gives_the_same_users_on_both_engines(
    calculator: SparkCalculator, tmp_path: Path
) -> None:
    users: list[UserData] = []
    expected: list[set[int]] = []
    for k, (_doc, values, want) in enumerate(CASES):
        base = (k + 1) * STRIDE
        users += [
            UserData(mpid=base + i + 1, attributes={} if v is None else {"a": v})
            for i, v in enumerate(values)
        ]
        expected.append({base + m for m in want})
    con = load(users)
    criteria = [parse_criteria(doc) for doc, _, _ in CASES]
    # The same criteria compiled to one AST per dialect: no other difference between the engines.
    query = compile_many(criteria, CompileContext(NOW, LOOKBACK))
    spark_query = compile_many(criteria, CompileContext(NOW, LOOKBACK, dialect=SPARK))
    schemas = {}
    for table, name in TABLES.items():
        schemas[table] = export_table(con, f"memory.main.{table}", tmp_path / f"{name}.parquet")
    calculator.register(Snapshot(tmp_path, (), schemas))
    on_duckdb = con.execute(to_sql(query)).fetchall()
    on_spark = [tuple(r) for r in calculator.session.sql(to_sql(spark_query, SPARK)).collect()]
    assert sorted(on_spark) == sorted(on_duckdb)
    for k in range(len(CASES)):
        got = {int(r[0]) for r in on_spark if r[k + 1] and (k + 1) * STRIDE < r[0] < (k + 2) * STRIDE}
        assert got == expected[k], f"case {k}: {CASES[k][0]}"


# ---- journey trees through the audience engine ------------------------------------------------


class World:
    def __init__(self, tmp: Path, calculator: SparkCalculator | None) -> None:
        self.store = DuckDBStore(tmp / "store")
        self.clock = ManualClock(T0)
        self.engine = AudienceEngine(
            self.store.connect(), self.clock, EngineSettings(90 * DAY, 90 * DAY), calculator
        )
        self.rng = random.Random(3)

    def send(self, *batches: dict[str, Any], input_id: int = 1) -> None:
        now = self.clock.now_ms()
        normalized, _ = normalize_request(list(batches), bulk=True, historical=False, received_at=now)
        self.store.apply(
            build_plan([IngestRequest(input_id, now, normalized)], self.store, WINDOWS, self.rng)
        )

    def state(self) -> dict[str, list[tuple[Any, ...]]]:
        con = self.store.reader()
        return {
            "memberships": con.execute("SELECT * FROM memberships ORDER BY ALL").fetchall(),
            "changes": con.execute(
                "SELECT seq, audience_id, mpid, action, changed_at, cause FROM membership_changes ORDER BY seq"
            ).fetchall(),
            "timers": con.execute("SELECT * FROM timers ORDER BY ALL").fetchall(),
        }

    def close(self) -> None:
        self.engine.con.close()
        self.store.close()


def ms(
    mid: int, audience: int, criteria: dict[str, Any] | None, parent: int | None = None, pos: int = 0
) -> MilestoneRow:
    return MilestoneRow(mid, 1, parent, pos, f"m{mid}", audience, criteria, criteria is None)


def event(name: str, ts: int, **attrs: Any) -> dict[str, Any]:
    data = {
        "event_name": name,
        "custom_event_type": "other",
        "timestamp_unixtime_ms": ts,
        "custom_attributes": attrs,
    }
    return {"event_type": "custom_event", "data": data}


def purchase(ts: int, amount: str, sku: str) -> dict[str, Any]:
    return {
        "event_type": "commerce_event",
        "data": {
            "timestamp_unixtime_ms": ts,
            "product_action": {
                "action": "purchase",
                "total_amount": amount,
                "products": [{"id": sku, "price": amount}],
            },
        },
    }


WATCHED_TWICE = {
    "type": "event",
    "event": {"event_type": "custom_event", "name": "Watch"},
    "having": {"fn": "count", "op": "greater_or_equal", "value": 2},
    "window": {"last": {"amount": 30, "unit": "days"}},
}
BIG_SPENDER = {
    "type": "event",
    "event": {"event_type": "commerce_event", "action": "purchase"},
    "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 100.1},
}
BOUGHT_SKU = {
    "type": "event",
    "event": {"event_type": "commerce_event", "action": "purchase"},
    "where": [{"attribute": "product.id", "op": "matches", "value": "^SKU-[0-9]+$"}],
}
GENRES = {"type": "user_attribute", "attribute": "genres", "op": "includes", "value": "JAZZ"}
TREE = JourneyRows(
    1,
    "j",
    (1,),
    (
        ms(1, 101, BIG_SPENDER, pos=0),
        ms(2, 102, WATCHED_TWICE, pos=1),
        ms(3, 103, None, pos=2),
        ms(4, 104, GENRES, parent=3),
        ms(5, 105, BOUGHT_SKU, parent=1, pos=0),
        ms(6, 106, {"type": "audience", "audience_id": 105, "member": False}, parent=1, pos=1),
    ),
)


def populate(w: World) -> None:
    w.send(
        {"mpid": 1, "events": [purchase(T0 - DAY, "60.05", "SKU-1"), purchase(T0 - 2 * DAY, "40.06", "X")]},
        {"mpid": 2, "events": [purchase(T0 - DAY, "100.10", "sku-2")]},
        {"mpid": 3, "events": [event("watch", T0 - DAY), event("WATCH", T0 - 3 * DAY, show="a")]},
        {"mpid": 4, "user_attributes": {"genres": ["Jazz", "Rock"]}},
        {"mpid": 5, "user_attributes": {"genres": "rock"}, "events": [event("watch", T0 - 40 * DAY)]},
    )


@pytest.fixture
def worlds(tmp_path: Path, calculator: SparkCalculator) -> Iterator[dict[str, World]]:
    made = {"duckdb": World(tmp_path / "d", None), "spark": World(tmp_path / "s", calculator)}
    yield made
    for w in made.values():
        w.close()


def test_journey_tree_full_calculation_matches_including_sealed_events(worlds: dict[str, World]) -> None:
    for w in worlds.values():
        populate(w)
        w.store.seal(min_rows=1)  # these events now live in a Parquet segment
        w.clock.advance(1000)
        w.send({"mpid": 6, "events": [event("watch", T0), event("watch", T0 - DAY)]})  # the hot tail
        w.engine.configure([TREE], {})
        w.engine.full_calculation()
    duck, spark = worlds["duckdb"], worlds["spark"]
    assert [duck.engine.members(a) for a in (101, 102, 103, 104, 105, 106)] == [
        [1],
        [3, 6],
        [2, 4, 5],
        [4],
        [1],
        [],
    ]
    assert spark.state() == duck.state()
    # Time passes: user 3's watches leave the window; a recalculation logs the same exits on both.
    for w in worlds.values():
        w.clock.advance(28 * DAY)
        w.engine.full_calculation()
    assert duck.engine.members(102) == [6]
    assert spark.state() == duck.state()


def test_calculated_attributes_match(worlds: dict[str, World]) -> None:
    from milepost.criteria import parse_calculated_attribute

    calc = {
        c.name: c
        for c in (
            parse_calculated_attribute(d)
            for d in (
                {
                    "name": "spend",
                    "event": {"event_type": "commerce_event", "action": "purchase"},
                    "calculation": "sum",
                    "attribute": "total_amount",
                },
                {
                    "name": "shows",
                    "event": {"event_type": "custom_event", "name": "watch"},
                    "calculation": "unique_list",
                    "attribute": "show",
                },
                {
                    "name": "fav",
                    "event": {"event_type": "custom_event", "name": "watch"},
                    "calculation": "most_frequent",
                    "attribute": "show",
                },
                {
                    "name": "last_show",
                    "event": {"event_type": "custom_event", "name": "watch"},
                    "calculation": "last_value",
                    "attribute": "show",
                },
            )
        )
    }
    tree = JourneyRows(
        1,
        "j",
        (1,),
        (
            ms(
                1,
                201,
                {"type": "calculated_attribute", "name": "spend", "op": "greater_or_equal", "value": 100.11},
                pos=0,
            ),
            ms(
                2,
                202,
                {"type": "calculated_attribute", "name": "shows", "op": "includes", "value": "B"},
                pos=1,
            ),
            ms(3, 203, {"type": "calculated_attribute", "name": "fav", "op": "equals", "value": "a"}, pos=2),
            ms(
                4,
                204,
                {"type": "calculated_attribute", "name": "last_show", "op": "equals", "value": "c"},
                pos=3,
            ),
        ),
    )
    for w in worlds.values():
        populate(w)
        w.send(
            {
                "mpid": 7,
                "events": [event("watch", T0 - 3 * DAY, show="a"), event("watch", T0 - 2 * DAY, show="b")],
            }
        )
        w.send(
            {
                "mpid": 8,
                "events": [
                    event("watch", T0 - 3 * DAY, show="a"),
                    event("watch", T0 - 2 * DAY, show="a"),
                    event("watch", T0 - DAY, show="c"),
                ],
            }
        )
        w.engine.configure([tree], calc)
        w.engine.full_calculation()
    duck, spark = worlds["duckdb"], worlds["spark"]
    assert [duck.engine.members(a) for a in (201, 202, 203, 204)] == [[1], [7], [3, 8], []]
    assert spark.state() == duck.state()


# ---- selection by configuration ---------------------------------------------------------------


def test_engine_is_chosen_by_configuration(
    monkeypatch: pytest.MonkeyPatch, spark: object, tmp_path: Path
) -> None:
    from milepost.config import Config
    from milepost.engines.base import open_calculator
    from milepost.errors import EngineError

    monkeypatch.setenv("MILEPOST_ENGINE", "Spark")
    monkeypatch.setenv("MILEPOST_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("MILEPOST_SPARK_STORAGE", str(tmp_path / "parquet"))
    config = Config.from_env(tmp_path / "data")
    assert (config.engine, config.spark_master, config.spark_dir) == (
        "spark",
        "local[2]",
        tmp_path / "parquet",
    )
    calculator = open_calculator(config)
    assert isinstance(calculator, SparkCalculator)
    assert calculator.session is spark and calculator.storage == tmp_path / "parquet"
    monkeypatch.delenv("MILEPOST_SPARK_STORAGE")
    monkeypatch.setenv("MILEPOST_ENGINE", "duckdb")
    config = Config.from_env(tmp_path / "data")
    assert open_calculator(config) is None and config.spark_dir == tmp_path / "data" / "spark"
    monkeypatch.setenv("MILEPOST_ENGINE", "flink")
    with pytest.raises(EngineError, match="unknown engine 'flink'"):
        open_calculator(Config.from_env(tmp_path / "data"))
