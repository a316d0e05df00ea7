"""Audience sizes from the sample (SPEC §5): instant, stable under edits, with honest intervals.

Each criterion is evaluated once on the sample with the same compiled SQL as full calculation and
cached as a set of sampled MPIDs; a milestone's estimate combines those sets (parent ∧ criteria ∧
¬earlier siblings), so editing one top-level criterion recomputes only that one. Intervals are
Wilson score intervals (with the finite-population correction); below a calculated ancestor an
estimate is scaled from that ancestor's actual size, so a child never shows more than its parent.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from milepost.audiences.sample import Sample
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.criteria import (
    CalculatedAttribute,
    CompileContext,
    Criteria,
    compile_criteria,
    parse_criteria,
    to_json,
    to_sql,
)
from milepost.criteria.model import AllGroup, AnyGroup

Z = 1.959964  # 95%
TOO_SMALL_HITS = 10  # below this many sampled members the relative error passes ~60%: show "~"
CACHE_TTL_MS = 5_000


@dataclass(frozen=True)
class Ratio:
    hits: int
    of: int  # sampled users it is a share of


def wilson(hits: int, n: int, fpc: float = 1.0) -> tuple[float, float]:
    """95% Wilson score interval for a proportion, the variance shrunk by the finite-population factor."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    z2 = Z * Z * fpc
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = math.sqrt(z2) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def size_of(ratio: Ratio, base: int, base_sampled: int, exact: bool) -> dict[str, Any]:
    """A `size` object: `base` users are represented by `base_sampled` sampled ones."""
    out: dict[str, Any] = {"sample_size": ratio.of, "sample_hits": ratio.hits}
    if exact:
        value = ratio.hits if base_sampled == base else round(base * ratio.hits / max(ratio.of, 1))
        return {"kind": "estimate", "value": value, "low": value, "high": value, "exact": True, **out}
    fpc = max(0.0, (base - base_sampled) / (base - 1)) if base > 1 else 0.0
    lo, hi = wilson(ratio.hits, ratio.of, fpc)
    if ratio.hits < TOO_SMALL_HITS:
        return {"kind": "too_small", "upper_bound": math.ceil(hi * base), "exact": False, **out}
    value = round(base * ratio.hits / ratio.of)
    return {
        "kind": "estimate",
        "value": value,
        "low": math.floor(lo * base),
        "high": math.ceil(hi * base),
        "exact": False,
        **out,
    }


def top_level(criteria: Criteria) -> tuple[str, list[Criteria]]:
    """The rows of the per-criterion breakdown: members of a top-level all/any, else the criteria itself."""
    if isinstance(criteria, AllGroup):
        return "all", list(criteria.all)
    if isinstance(criteria, AnyGroup):
        return "any", list(criteria.any)
    return "one", [criteria]


@dataclass
class NodeEstimate:
    audience_id: int
    members: frozenset[int]
    size: dict[str, Any]
    parent_share: float | None
    criteria: list[dict[str, Any]] = field(default_factory=list)


class Estimator:
    def __init__(self, con: duckdb.DuckDBPyConnection, target: int = 40_000) -> None:
        self.con = con
        self.sample = Sample(con, target)  # creates the schema
        con.execute("SET search_path = 'sample,main'").fetchall()
        self._cache: dict[tuple[Any, ...], tuple[float, int, frozenset[int]]] = {}
        self._lock = threading.RLock()
        self._built = False

    def refresh(self) -> None:
        with self._lock:
            if not self._built:
                self.sample.rebuild()
                self._built = True
            else:
                self.sample.refresh()

    # ---- sets on the sample --------------------------------------------------------------------

    def _set(self, key: tuple[Any, ...], sql: str | Callable[[], str]) -> frozenset[int]:
        """Sampled members for `key`, from the cache when fresh; `sql` is built only on a miss."""
        hit = self._cache.get(key)
        now = time.monotonic() * 1000
        if hit is not None and hit[1] == self.sample.version and now - hit[0] < CACHE_TTL_MS:
            return hit[2]
        rows = self.con.execute(sql if isinstance(sql, str) else sql()).fetchall()
        value = frozenset(int(r[0]) for r in rows)
        self._cache[key] = (now, self.sample.version, value)
        if len(self._cache) > 5000:
            self._cache.clear()
        return value

    def root(self, input_ids: tuple[int, ...], now_ms: int, lifetime_ms: int) -> frozenset[int]:
        ids = ",".join(str(int(i)) for i in input_ids) or "NULL"
        bucket = now_ms // 1000
        return self._set(
            ("root", input_ids, bucket),
            f"SELECT mpid FROM sample.users WHERE last_seen IS NOT NULL AND last_seen > {int(now_ms - lifetime_ms)} "
            f"AND list_has_any(inputs, [{ids}]::INTEGER[])",
        )

    def criterion(self, criteria: Criteria, ctx: CompileContext) -> frozenset[int]:
        key = (
            "c",
            orjson.dumps(to_json(criteria), option=orjson.OPT_SORT_KEYS),
            ctx.input_ids,
            ctx.parent_audience_id,
            ctx.now_ms // 1000,
        )
        return self._set(key, lambda: to_sql(compile_criteria(criteria, ctx)))

    def criteria_set(
        self, criteria: Criteria, ctx: CompileContext
    ) -> tuple[frozenset[int], list[frozenset[int]]]:
        """The set of a milestone's criteria, combined from its cached top-level parts."""
        kind, parts = top_level(criteria)
        sets = [self.criterion(p, ctx) for p in parts]
        if kind == "all":
            combined = frozenset.intersection(*sets) if sets else self.everyone()
        elif kind == "any":
            combined = frozenset.union(*sets) if sets else frozenset()
        else:
            combined = sets[0]
        return combined, sets

    def everyone(self) -> frozenset[int]:
        return self._set(("everyone", self.sample.version), "SELECT mpid FROM sample.users")

    # ---- journeys --------------------------------------------------------------------------------

    def journey(
        self,
        journey: JourneyRows,
        calculated: Mapping[str, CalculatedAttribute],
        actual: Mapping[int, int],
        now_ms: int,
        lookback_ms: int,
        lifetime_ms: int,
    ) -> dict[int, NodeEstimate]:
        """Estimates for every audience of a journey (and each milestone's per-criterion breakdown)."""
        with self._lock:
            self.refresh()
            out: dict[int, NodeEstimate] = {}
            root = self.root(journey.input_ids, now_ms, lifetime_ms)
            by_parent: dict[int | None, list[MilestoneRow]] = {}
            for m in journey.milestones:
                by_parent.setdefault(m.parent_id, []).append(m)
            # (members of the nearest calculated ancestor in the sample, its actual size)
            anchor: tuple[frozenset[int], int] | None = None
            self._walk(
                journey,
                by_parent,
                None,
                root,
                -journey.id,
                anchor,
                calculated,
                actual,
                now_ms,
                lookback_ms,
                out,
            )
            return out

    def _walk(
        self,
        journey: JourneyRows,
        by_parent: dict[int | None, list[MilestoneRow]],
        parent_id: int | None,
        parent_set: frozenset[int],
        parent_audience: int,
        anchor: tuple[frozenset[int], int] | None,
        calculated: Mapping[str, CalculatedAttribute],
        actual: Mapping[int, int],
        now_ms: int,
        lookback_ms: int,
        out: dict[int, NodeEstimate],
    ) -> None:
        siblings = sorted(by_parent.get(parent_id, []), key=lambda m: (m.remaining, m.position))
        ctx = CompileContext(
            now_ms=now_ms,
            lookback_ms=lookback_ms,
            input_ids=journey.input_ids,
            parent_audience_id=parent_audience,
            calculated=calculated,
        )
        taken: frozenset[int] = frozenset()
        for m in siblings:
            eligible = parent_set - taken
            rows: list[dict[str, Any]] = []
            if m.remaining:
                members = eligible
            else:
                crit = parse_criteria(m.criteria if m.criteria is not None else {"all": []})
                combined, parts = self.criteria_set(crit, ctx)
                members = eligible & combined
                taken = taken | (parent_set & combined)
                rows = [
                    {"criterion": to_json(p), "size": self._size(eligible & s, anchor)}
                    for p, s in zip(top_level(crit)[1], parts, strict=True)
                ]
            node_anchor = anchor
            if m.audience_id in actual:
                node_anchor = (members, actual[m.audience_id])
            share = len(members) / len(parent_set) if parent_set else None
            out[m.audience_id] = NodeEstimate(
                m.audience_id, members, self._size(members, anchor), share, rows
            )
            self._walk(
                journey,
                by_parent,
                m.id,
                members,
                m.audience_id,
                node_anchor,
                calculated,
                actual,
                now_ms,
                lookback_ms,
                out,
            )

    def _size(self, members: frozenset[int], anchor: tuple[frozenset[int], int] | None) -> dict[str, Any]:
        s = self.sample
        if anchor is None:
            return size_of(Ratio(len(members), s.size), s.population, s.size, s.exact)
        base_members, base_actual = anchor
        return size_of(
            Ratio(len(members & base_members), len(base_members)), base_actual, len(base_members), s.exact
        )

    def cache_size(self) -> int:
        return len(self._cache)
