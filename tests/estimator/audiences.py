"""Random audiences over the synthetic population (tests/estimator/population.py), and exact sizes.

`random_criteria` draws thresholds on attributes, event counts in windows, sums, sequences,
negations and all/any combinations. `Exact` gives exact member sets on the whole store: the same
compiled SQL as full calculation (`compile_many`), on the full tables instead of the sample.
"""

from __future__ import annotations

import random
from typing import Any

import duckdb
from tests.estimator.population import COUNTRIES, GENRES

from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.criteria import CompileContext, compile_many, parse_criteria, to_sql

WATCH = {"event_type": "custom_event", "name": "watch"}
SEARCH = {"event_type": "custom_event", "name": "search"}
HOME = {"event_type": "screen_view", "name": "Home"}
PURCHASE = {"event_type": "commerce_event", "action": "purchase"}


def attr(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"type": "user_attribute", "attribute": name, "op": op, "value": value}


def last(days: int) -> dict[str, Any]:
    return {"last": {"amount": days, "unit": "days"}}


def leaf(r: random.Random) -> dict[str, Any]:
    kind = r.randrange(12)
    if kind == 0:
        return attr("score", r.choice(["greater_than", "less_than"]), r.randrange(0, 1000))
    if kind == 1:
        lo = r.randrange(18, 75)
        return {
            "type": "user_attribute",
            "attribute": "age",
            "op": "between",
            "min": lo,
            "max": lo + r.randrange(0, 30),
        }
    if kind == 2:
        return attr("tier", "equals", r.choice(["gold", "silver", "bronze", "none"]))
    if kind == 3:
        return {
            "type": "user_attribute",
            "attribute": "country",
            "op": "in",
            "values": r.sample(COUNTRIES, r.randrange(1, 4)),
        }
    if kind == 4:
        return attr("ltv", "greater_than", r.choice([20, 50, 100, 200, 400, 800]))
    if kind == 5:
        return attr(r.choice(["vip", "newsletter"]), "equals", r.random() < 0.7)
    if kind == 6:
        return {
            "type": "event",
            "event": WATCH,
            "having": {"fn": "count", "op": "greater_or_equal", "value": r.randrange(1, 5)},
            "window": last(r.choice([7, 14, 30, 60, 90])),
        }
    if kind == 7:
        return {
            "type": "event",
            "event": WATCH,
            "where": [{"attribute": "genre", "op": "equals", "value": r.choice(GENRES)}],
            "window": last(r.choice([14, 30, 60])),
        }
    if kind == 8:
        return {
            "type": "event",
            "event": PURCHASE,
            "having": {
                "fn": "sum",
                "attribute": "total_amount",
                "op": "greater_than",
                "value": r.choice([0, 50, 150, 300]),
            },
        }
    if kind == 9:
        return {
            "type": "sequence",
            "first": SEARCH,
            "then": WATCH,
            "within": {"amount": r.choice([3, 7, 14, 30]), "unit": "days"},
            "completed": True,
            "window": last(90),
        }
    if kind == 10:
        return {"type": "event", "event": HOME, "window": last(r.choice([7, 30, 90]))}
    return {"not": leaf(r)}


def random_criteria(r: random.Random) -> dict[str, Any]:
    shape = r.random()
    if shape < 0.4:
        return leaf(r)
    if shape < 0.75:
        return {"all": [leaf(r) for _ in range(r.randrange(2, 4))]}
    return {"any": [leaf(r) for _ in range(2)]}


def one_milestone(
    journey_id: int, audience_id: int, criteria: dict[str, Any], inputs: tuple[int, ...]
) -> JourneyRows:
    return JourneyRows(
        journey_id,
        f"j{journey_id}",
        inputs,
        (MilestoneRow(journey_id, journey_id, None, 0, "m", audience_id, criteria, False),),
    )


class Exact:
    """Exact member sets on the full store (schema `main`): each distinct leaf is one compiled query
    (the SQL full calculation runs), and/or/not are combined in Python, so many random audiences
    sharing leaves cost few queries."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        inputs: tuple[int, ...],
        now_ms: int,
        lookback_ms: int,
        lifetime_ms: int,
    ) -> None:
        self.con = con
        self.ctx = CompileContext(
            now_ms=now_ms, lookback_ms=lookback_ms, input_ids=inputs, parent_audience_id=-1
        )
        ids = ", ".join(str(i) for i in inputs)
        self.everyone = self._query("SELECT mpid FROM main.users")
        self.root = self._query(
            f"SELECT mpid FROM main.users WHERE last_seen IS NOT NULL AND last_seen > {now_ms - lifetime_ms} "
            f"AND list_has_any(inputs, [{ids}]::INTEGER[])"
        )
        self._leaves: dict[str, frozenset[int]] = {}

    def _query(self, sql: str) -> frozenset[int]:
        return frozenset(int(r[0]) for r in self.con.execute(sql).fetchall())

    def members(self, criteria: dict[str, Any]) -> frozenset[int]:
        if "all" in criteria:
            sets = [self.members(c) for c in criteria["all"]]
            return frozenset.intersection(self.everyone, *sets)
        if "any" in criteria:
            return frozenset().union(*(self.members(c) for c in criteria["any"]))
        if "not" in criteria:
            return self.everyone - self.members(criteria["not"])
        key = repr(sorted(criteria.items()))
        if key not in self._leaves:
            sql = to_sql(compile_many([parse_criteria(criteria)], self.ctx))
            self._leaves[key] = self._query(f"SELECT mpid FROM ({sql}) q WHERE c0")
        return self._leaves[key]

    def size(self, criteria: dict[str, Any]) -> int:
        """Members of the journey root meeting the criteria."""
        return len(self.root & self.members(criteria))
