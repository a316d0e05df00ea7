"""Audience sizes from the sample (SPEC §5): instant, stable under edits, with honest intervals.

Each criterion is evaluated once on the sample with the same compiled SQL as full calculation and
cached as a boolean mask over the sample's row order (`masks.SampleIndex`); a milestone's estimate
combines those masks (parent ∧ criteria ∧ ¬earlier siblings) with vector operations, so editing
one top-level criterion recomputes only that one. Criteria on user attributes alone run once per
distinct attribute value (`attribute_leaves`). When the sample changes, a worker thread patches
the cached masks by re-evaluating their criteria on the changed users alone, off the request
path; masks are keyed by the second of `now`, as time windows move with it. Intervals are
Wilson score intervals (with the finite-population correction); below a calculated ancestor an
estimate is scaled from that ancestor's actual size, so a child never shows more than its parent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from sqlglot import exp

from milepost.audiences.attribute_leaves import (
    DISTINCT_TABLE,
    AttributeLeaf,
    PathValues,
    attribute_leaf,
    distinct_table,
    path_values,
    users_mask,
)
from milepost.audiences.masks import Mask, SampleIndex, as_ids, count
from milepost.audiences.sample import SAMPLE_TABLES, Sample
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

log = logging.getLogger(__name__)

Z = 1.959964  # 95%
TOO_SMALL_HITS = 10  # below this many sampled members the relative error passes ~60%: show "~"
CACHE_TTL_MS = 5_000
# An expired mask is still served (and renewed in the background) up to this age: it is kept
# current with the sample by patching; only what the criteria read outside it can be older.
STALE_TTL_MS = 2 * CACHE_TTL_MS
CACHE_ENTRIES = 5_000
REFRESH_WAIT_MS = 50  # an estimate waits this long at most for the sample to catch up
RENEW_AFTER_MS = 3_000  # masks in use are recomputed in the background once this old
WORKER_IDLE_S = 30.0  # the worker thread ends after this long without a request
PATCH_SHARE = 0.25  # above this share of changed users, recomputing a mask costs less than patching it


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
    members: Mask  # over the estimator's sample index
    size: dict[str, Any]
    parent_share: float | None
    criteria: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    attributes: AttributeLeaf | None  # set when the criterion reads user attributes only


@dataclass
class _Entry:
    at_ms: float  # monotonic time it was computed
    sql: str
    attributes: AttributeLeaf | None
    mask: Mask
    used_ms: float = 0.0  # monotonic time it was last served


@dataclass
class _View:
    """What estimates read: one version of the sample, its row order and sizes."""

    version: int
    index: SampleIndex
    size: int
    population: int
    exact: bool
    paths: dict[str, PathValues] = field(default_factory=dict)  # attribute values per path


class Estimator:
    """Estimates on the sample. A worker thread refreshes the sample and patches the cached masks
    on its own connection; an estimate waits for that at most `REFRESH_WAIT_MS`, then reads the last
    installed view, so a slow refresh (a burst of ingest, a checkpoint) never holds estimates up."""

    def __init__(self, con: duckdb.DuckDBPyConnection, target: int = 40_000) -> None:
        self.con = con
        self.sample = Sample(con.cursor(), target)  # its own connection; creates the schema
        db = con.execute("SELECT current_database()").fetchall()[0][0]
        self._path = f"'{db}.sample,{db}.main'"
        # Changed users' rows, for patching cached masks: a private in-memory database.
        self._delta = f"milepost_estimator_delta_{uuid.uuid4().hex}"
        con.execute(f"ATTACH ':memory:' AS {self._delta}").fetchall()
        self._delta_path = f"'{self._delta}.main,{db}.main'"
        con.execute(f"SET search_path = {self._path}").fetchall()
        self._worker_con = con.cursor()
        self._worker_con.execute(f"SET search_path = {self._path}").fetchall()
        self._cache: dict[tuple[Any, ...], _Entry] = {}  # masks over the current view's index
        self._sql: dict[tuple[Any, ...], _Compiled] = {}  # per (criteria, context, second)
        self._view = _View(-1, SampleIndex(np.zeros(0, dtype=np.int64)), 0, 0, True)
        self._lock = threading.RLock()  # estimates, and installing a new view
        self._sync_lock = threading.Lock()  # one refresh-and-patch at a time
        self._built = False
        self._wake = threading.Event()
        self._cycles = threading.Condition()
        self._started = 0  # worker cycles started / finished (with the error of the last one)
        self._finished = 0
        self._error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._closed = False

    @property
    def _index(self) -> SampleIndex:
        return self._view.index

    def refresh(self) -> None:
        """Build the sample on first use; afterwards ask the worker to bring it up to date."""
        if not self._built:
            with self._lock:
                if not self._built:
                    self.sample.rebuild()
                    self._built = True
                    return
        self._wake_worker()

    # ---- the worker ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker and close the connections the estimator opened (not the one it was given)."""
        with self._cycles:
            self._closed = True
            worker = self._worker
        self._wake.set()
        if worker is not None and worker is not threading.current_thread():
            worker.join(30)
        self._worker_con.close()
        self.sample.con.close()

    def _wake_worker(self) -> None:
        with self._cycles:
            if self._closed:
                return
            if self._worker is None or not self._worker.is_alive():
                ref = weakref.ref(self)
                self._worker = threading.Thread(
                    target=Estimator._work, args=(ref,), name="milepost-estimator", daemon=True
                )
                self._worker.start()
        self._wake.set()

    @staticmethod
    def _work(ref: weakref.ref[Estimator]) -> None:
        idle = 0.0
        while True:
            est = ref()
            if est is None or est._closed or idle > WORKER_IDLE_S:
                return
            wake = est._wake
            del est
            woken = wake.wait(1.0)
            est = ref()
            if est is None or est._closed:
                return
            if woken or est._in_use():
                idle = 0.0
                est._cycle()
            else:
                idle += 1.0
            del est

    def _cycle(self) -> None:
        with self._cycles:
            self._wake.clear()
            self._started += 1
            cycle = self._started
        error: BaseException | None = None
        try:
            with self._sync_lock:
                self.sample.try_refresh()
                self._sync(self._worker_con)
        except Exception as exc:  # reported to the estimates waiting for this cycle
            log.debug("refreshing the estimator's sample failed", exc_info=True)
            error = exc
        with self._cycles:
            self._finished = cycle
            self._error = error
            self._cycles.notify_all()
        if error is None:
            try:
                with self._sync_lock:
                    self._renew(self._worker_con)
            except Exception:  # the estimate that needs the mask computes it itself
                log.debug("renewing cached estimates failed", exc_info=True)

    def _in_use(self) -> bool:
        now = time.monotonic() * 1000
        return any(now - e.used_ms < CACHE_TTL_MS for e in list(self._cache.values()))

    def _renew(self, con: duckdb.DuckDBPyConnection) -> None:
        """Recompute the oldest mask in use once it is old enough, so estimates rarely meet an expired
        one; one per cycle, so a waiting estimate's refresh is not held up for long."""
        view, now = self._view, time.monotonic() * 1000
        with self._lock:
            due = [
                (e.at_ms, k, e)
                for k, e in self._cache.items()
                if now - e.at_ms > RENEW_AFTER_MS and now - e.used_ms < CACHE_TTL_MS
            ]
        if not due:
            return
        _, key, entry = min(due, key=lambda d: d[0])
        mask = self._evaluate(entry.sql, entry.attributes, con, view)
        with self._lock:
            if self._view is view and self._cache.get(key) is entry:
                entry.mask, entry.at_ms = mask, now

    def _await_refresh(self) -> None:
        """Wait (a little) for a refresh that starts after now; raise what it raised."""
        with self._cycles:
            wanted = self._started + 1
        self._wake_worker()
        deadline = time.monotonic() + REFRESH_WAIT_MS / 1000
        with self._cycles:
            while self._finished < wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # still running: estimate from the last installed view
                self._cycles.wait(left)
            if self._error is not None:
                raise self._error

    def _current(self) -> None:
        """A view exists and, unless the worker is installing a newer one, is of the sample's version."""
        while self._view.version != self.sample.version:
            if self._sync_lock.acquire(blocking=False):
                try:
                    with self._lock:  # the request connection is shared with other estimates
                        self._sync(self.con)
                finally:
                    self._sync_lock.release()
                return
            if self._view.version >= 0:
                return  # the worker is installing it: estimate from the last view meanwhile
            time.sleep(0.001)  # first use while the worker installs the first view

    # ---- masks on the sample -------------------------------------------------------------------

    def _sync(self, con: duckdb.DuckDBPyConnection) -> None:
        """Install a view of the sample's current version, cached masks patched or dropped."""
        version = self.sample.version
        old = self._view
        if version == old.version:
            return
        s = self.sample
        size, population, exact = s.size, s.population, s.exact
        index = SampleIndex(as_ids(con.execute("SELECT mpid FROM sample.users").fetchnumpy()["mpid"]))
        changed = s.changed_since(old.version) if old.version >= 0 else None
        with self._lock:
            entries = list(self._cache.items())
        patched: list[tuple[tuple[Any, ...], _Entry, Mask]] = []
        if changed is not None and changed.shape[0] <= PATCH_SHARE * max(len(index), 1) and entries:
            patched = self._patch(con, old.index, index, changed, entries)
        with self._lock:
            self._view = _View(version, index, size, population, exact)
            kept = {}
            for key, entry, mask in patched:
                if self._cache.get(key) is entry:  # not replaced meanwhile
                    entry.mask = mask
                    kept[key] = entry
            self._cache.clear()  # entries computed meanwhile were over the old index
            self._cache.update(kept)

    def _patch(
        self,
        con: duckdb.DuckDBPyConnection,
        old: SampleIndex,
        index: SampleIndex,
        changed: np.ndarray,
        entries: list[tuple[tuple[Any, ...], _Entry]],
    ) -> list[tuple[tuple[Any, ...], _Entry, Mask]]:
        """Each cached mask re-evaluated on the changed users only; the others keep their rows."""
        con.register("milepost_changed", pa.table({"mpid": pa.array(changed, pa.int64())}))
        try:
            for table in SAMPLE_TABLES:
                con.execute(
                    f"CREATE OR REPLACE TABLE {self._delta}.{table} AS SELECT * FROM sample.{table} "
                    "WHERE mpid IN (SELECT mpid FROM milepost_changed)"
                ).fetchall()
            rows = index.positions(changed)
            out = []
            con.execute(f"SET search_path = {self._delta_path}").fetchall()
            try:
                for key, entry in entries:
                    mask = index.carry(entry.mask, old)
                    mask[rows] = False
                    mask[index.positions(self._fetch(entry.sql, con))] = True
                    out.append((key, entry, mask))
            finally:
                con.execute(f"SET search_path = {self._path}").fetchall()
            return out
        finally:
            con.unregister("milepost_changed")

    def _fetch(self, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> np.ndarray:
        result = (con or self.con).execute(sql).fetchnumpy()
        return as_ids(next(iter(result.values())))

    def _mask(self, key: tuple[Any, ...], sql: str | Callable[[], _Compiled]) -> Mask:
        """Sampled members for `key`, from the cache when fresh; `sql` is built only on a miss."""
        hit = self._cache.get(key)
        now = time.monotonic() * 1000
        if hit is not None and now - hit.at_ms < STALE_TTL_MS:
            hit.used_ms = now
            if now - hit.at_ms >= CACHE_TTL_MS:
                self._wake_worker()  # expired but patched: serve it while the worker renews it
            return hit.mask
        compiled = _Compiled(sql, None) if isinstance(sql, str) else sql()
        mask = self._evaluate(compiled.sql, compiled.attributes, self.con, self._view)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = _Entry(now, compiled.sql, compiled.attributes, mask, now)
        return mask

    def _evaluate(
        self, sql: str, attributes: AttributeLeaf | None, con: duckdb.DuckDBPyConnection, view: _View
    ) -> Mask:
        if attributes is None:
            return view.index.mask(self._fetch(sql, con))
        table, codes = distinct_table([self._path_values(p, con, view) for p in attributes.paths])
        con.register(DISTINCT_TABLE, table)
        try:
            chosen = self._fetch(attributes.sql, con)
        finally:
            con.unregister(DISTINCT_TABLE)
        return users_mask(codes, chosen, table.num_rows)

    def _path_values(self, path: str, con: duckdb.DuckDBPyConnection, view: _View) -> PathValues:
        found = view.paths.get(path)
        if found is None:
            literal = exp.Literal.string(path).sql(dialect="duckdb")
            users = con.sql(
                f"SELECT mpid, CAST(json_extract(attributes, {literal}) AS VARCHAR) AS v FROM sample.users"
            ).to_arrow_table()
            mpids = as_ids(users.column("mpid").to_numpy())
            index = view.index.mpids
            pos = np.searchsorted(index, mpids)
            pos[pos >= len(index)] = 0
            known = index[pos] == mpids if len(index) else np.zeros(len(mpids), dtype=np.bool_)
            found = path_values(users.filter(pa.array(known)), pos[known], len(index))
            view.paths[path] = found
        return found

    def root(self, input_ids: tuple[int, ...], now_ms: int, lifetime_ms: int) -> Mask:
        ids = ",".join(str(int(i)) for i in input_ids) or "NULL"
        bucket = now_ms // 1000
        return self._mask(
            ("root", input_ids, bucket),
            f"SELECT mpid FROM users WHERE last_seen IS NOT NULL AND last_seen > {int(now_ms - lifetime_ms)} "
            f"AND list_has_any(inputs, [{ids}]::INTEGER[])",
        )

    def _compiled(self, key: tuple[Any, ...], criteria: Criteria, ctx: CompileContext) -> _Compiled:
        found = self._sql.get(key)
        if found is None:
            tree = compile_criteria(criteria, ctx)
            sql = to_sql(tree)
            found = _Compiled(sql, attribute_leaf(tree, sql))
            if len(self._sql) >= CACHE_ENTRIES:
                self._sql.clear()
            self._sql[key] = found
        return found

    def criterion(self, criteria: Criteria, ctx: CompileContext) -> Mask:
        key = (
            "c",
            orjson.dumps(to_json(criteria), option=orjson.OPT_SORT_KEYS),
            ctx.input_ids,
            ctx.parent_audience_id,
            ctx.now_ms // 1000,
        )
        return self._mask(key, lambda: self._compiled(key, criteria, ctx))

    def criteria_set(self, criteria: Criteria, ctx: CompileContext) -> tuple[Mask, list[Mask]]:
        """The mask of a milestone's criteria, combined from its cached top-level parts."""
        kind, parts = top_level(criteria)
        masks = [self.criterion(p, ctx) for p in parts]
        if kind == "all":
            combined = np.logical_and.reduce(masks) if masks else self.everyone()
        elif kind == "any":
            combined = np.logical_or.reduce(masks) if masks else self._index.nobody()
        else:
            combined = masks[0]
        return combined, masks

    def everyone(self) -> Mask:
        return self._index.everyone()

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
        if not self._built:
            self.refresh()
        else:
            self._await_refresh()
        self._current()
        with self._lock:
            out: dict[int, NodeEstimate] = {}
            root = self.root(journey.input_ids, now_ms, lifetime_ms)
            by_parent: dict[int | None, list[MilestoneRow]] = {}
            for m in journey.milestones:
                by_parent.setdefault(m.parent_id, []).append(m)
            # (members of the nearest calculated ancestor in the sample, its actual size)
            anchor: tuple[Mask, int] | None = None
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
        parent_set: Mask,
        parent_audience: int,
        anchor: tuple[Mask, int] | None,
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
        parent_count = count(parent_set)
        eligible = parent_set
        for m in siblings:
            rows: list[dict[str, Any]] = []
            if m.remaining:
                members = eligible
            else:
                crit = parse_criteria(m.criteria if m.criteria is not None else {"all": []})
                combined, parts = self.criteria_set(crit, ctx)
                members = eligible & combined
                rows = [
                    {"criterion": to_json(p), "size": self._size(eligible & s, anchor)}
                    for p, s in zip(top_level(crit)[1], parts, strict=True)
                ]
                eligible = eligible & ~combined  # later siblings: parent ∧ ¬earlier siblings
            node_anchor = anchor
            if m.audience_id in actual:
                node_anchor = (members, actual[m.audience_id])
            share = count(members) / parent_count if parent_count else None
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

    def _size(self, members: Mask, anchor: tuple[Mask, int] | None) -> dict[str, Any]:
        s = self._view
        if anchor is None:
            return size_of(Ratio(count(members), s.size), s.population, s.size, s.exact)
        base_members, base_actual = anchor
        return size_of(
            Ratio(count(members & base_members), count(base_members)),
            base_actual,
            count(base_members),
            s.exact,
        )

    def cache_size(self) -> int:
        return len(self._cache)
