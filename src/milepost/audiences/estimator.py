"""Audience sizes from the sample (SPEC §5): instant, stable under edits, with honest intervals.

Each criterion is evaluated once on the sample with the same compiled SQL as full calculation and
cached as a boolean mask over the sample's row order (`masks.SampleIndex`); a milestone's estimate
combines those masks (parent ∧ criteria ∧ ¬earlier siblings) with vector operations, so editing
one top-level criterion recomputes only that one. Criteria on user attributes alone run once per
distinct attribute value (`attribute_leaves`); event counts, sums of amounts and sequences run in
NumPy over the sample's events (`event_leaves`), and a journey's root over its users' last-seen times
and inputs (`root_leaves`). When the sample changes, a worker thread carries those columns to the new
version reading only the changed users' rows, and patches the cached masks by re-evaluating their
criteria on the changed users alone (over those rows where the columns hold what they read, else
with their SQL on those users), off the request path. A cached mask remembers the instant it was
computed at and until when it holds (`validity`): it is served for any `now` in that span, so
caching survives time passing, and a criterion is compiled once with `now` as a parameter
(`sql_templates`). Intervals are Wilson score intervals (with the finite-population correction);
below a calculated ancestor an estimate is scaled from that ancestor's actual size, so a child
never shows more than its parent.

How stale an estimate can be, with respect to the request's `now`: a criterion whose durations
(windows, lookback, `within`, profile lifetime) are all at least a day is served from a result
computed up to `leaves.TIME_SLACK_MS` (60 s) earlier, i.e. its windows may sit up to 60 s behind the
request (for a 1-day window, at most 0.07% of its span); any other criterion is exact at the
request's instant, except those reading memberships or rolling date conditions, which are
evaluated once per second of `now` as before. What the sample does not hold (memberships) may be
up to `STALE_TTL_MS` old; the sample itself follows ingest through patching.

The view's columns are also kept in a file beside the store (`view_file`), written by the worker,
so a new estimator (a restart) opens them rather than reading them out of the sample again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from sqlglot import exp

from milepost.audiences import view_file
from milepost.audiences.attribute_leaves import (
    AttributeLeaf,
    PathValues,
    distinct_table,
    path_values,
    updated_values,
    users_mask,
)
from milepost.audiences.breakdown import top_level
from milepost.audiences.demand import Demand
from milepost.audiences.event_columns import CHANGED_TABLE, EventColumns
from milepost.audiences.event_columns import load as load_events
from milepost.audiences.event_columns import update as update_events
from milepost.audiences.event_leaves import evaluate as evaluate_events
from milepost.audiences.leaves import Leaf, RootLeaf
from milepost.audiences.masks import Ids, Mask, SampleIndex, as_ids, count
from milepost.audiences.root_leaves import load as load_users
from milepost.audiences.root_leaves import update as update_users
from milepost.audiences.sample import SAMPLE_TABLES, Sample
from milepost.audiences.sizes import Ratio, size_of
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.audiences.validity import Instants, durations, used_calculated
from milepost.audiences.view_file import View
from milepost.audiences.view_writes import ViewWrites
from milepost.criteria import (
    CalculatedAttribute,
    CompileContext,
    Criteria,
    parse_criteria,
    to_json,
)
from milepost.priority import named_thread

log = logging.getLogger(__name__)

CACHE_TTL_MS = 5_000
# An expired mask is still served (and renewed in the background) up to this age: it is kept
# current with the sample by patching; only what the criteria read outside it can be older.
STALE_TTL_MS = 2 * CACHE_TTL_MS
CACHE_ENTRIES = 5_000
REFRESH_WAIT_MS = 50  # an estimate waits this long at most for the sample to catch up ...
CATCH_UP_WAIT_MS = 30_000  # ... or this long after a quiet spell, when it was not kept current
RENEW_AFTER_MS = 3_000  # masks in use are recomputed in the background once this old
RENEW_AHEAD_MS = 20_000  # ... and at the latest requested instant once they serve less ahead of it
WORKER_IDLE_S = 30.0  # the worker thread ends after this long without a request
# While estimates are made, the worker looks for accepted batches this often (a cheap query), so an
# estimate rarely finds the sample behind the store and has to wait for a refresh.
WORKER_POLL_S = 0.05
PATCH_SHARE = 0.25  # above this share of changed users, recomputing a mask costs less than patching it


@dataclass
class NodeEstimate:
    audience_id: int
    members: Mask  # over the estimator's sample index
    size: dict[str, Any]
    parent_share: float | None
    criteria: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Entry:
    at_ms: float  # monotonic time it was computed
    mask: Mask
    used_ms: float  # monotonic time it was last served
    leaf: Leaf
    now_ms: int  # the instant it is the answer for
    until_ms: int  # ... and stays the answer (to serve) until

    def serves(self, now_ms: int) -> bool:
        return self.now_ms <= now_ms < self.until_ms


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
        self._leaves: dict[tuple[Any, ...], Leaf] = {}  # per (criteria, context), whatever `now` is
        self._latest_now_ms = 0  # the instant the latest estimate was asked for
        self._view = View(-1, SampleIndex(np.zeros(0, dtype=np.int64)), 0, 0, True)
        self._lock = threading.RLock()  # estimates, and installing a new view
        self._sync_lock = threading.Lock()  # one refresh-and-patch at a time
        self._built = False
        self._wake = threading.Event()
        self._cycles = threading.Condition()
        self._started = 0  # worker cycles started / finished (with the error of the last one)
        self._finished = 0
        self._covered = -1  # the last accepted batch the installed view holds (-1: none yet)
        self.cycle_s = 0.0  # how long the last refresh-and-patch took (wall clock)
        self._error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        self._file = view_file.location(con)  # the view's columns beside the store (None: in memory)
        self._writes = ViewWrites()  # when the file is written again
        self.demand = Demand()

    @property
    def _index(self) -> SampleIndex:
        return self._view.index

    def wants_refresh(self) -> bool:
        """Whether to refresh the sample in the background: to build it, or while estimates are asked."""
        return not self._built or self.demand.recent()

    def refresh(self) -> None:
        """Adopt (or build) the sample on first use; afterwards ask the worker to bring it up to date."""
        if not self._built:
            with self._lock:
                if not self._built:
                    self.sample.start()
                    self._built = True
                    with self._cycles:  # estimates install a view of it before reading one
                        self._covered = self.sample.batch_seq
        # the worker installs a view of it with its columns read, before an estimate needs them
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
        try:
            self.persist(force=True)
        except Exception:  # the next start reads the columns from the sample instead
            log.debug("writing the estimator's view failed", exc_info=True)
        self._worker_con.close()
        self.sample.con.close()

    def _wake_worker(self) -> None:
        with self._cycles:
            if self._closed:
                return
            if self._worker is None or not self._worker.is_alive():
                ref = weakref.ref(self)
                self._worker = named_thread(Estimator._work, "milepost-estimator", (ref,))
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
            poll = WORKER_POLL_S if est._in_use() else 1.0
            del est
            woken = wake.wait(poll)
            est = ref()
            if est is None or est._closed:
                return
            if woken or est._in_use():
                idle = 0.0
                est._cycle()
            else:
                idle += poll
            del est

    def _cycle(self) -> None:
        with self._cycles:
            self._wake.clear()
            self._started += 1
            cycle = self._started
        error: BaseException | None = None
        covered = -1
        began = time.monotonic()
        try:
            with self._sync_lock:
                self.sample.try_refresh()
                covered = self.sample.batch_seq  # the view installed next holds at least this
                self._sync(self._worker_con, ahead=True)
        except Exception as exc:  # reported to the estimates waiting for this cycle
            log.debug("refreshing the estimator's sample failed", exc_info=True)
            error = exc
        self.cycle_s = time.monotonic() - began
        with self._cycles:
            self._finished = cycle
            self._error = error
            if error is None:
                self._covered = max(self._covered, covered)
            self._cycles.notify_all()
        if error is None:
            try:
                with self._sync_lock:
                    self._renew(self._worker_con)
            except Exception:  # the estimate that needs the mask computes it itself
                log.debug("renewing cached estimates failed", exc_info=True)
            try:
                self.persist()
            except Exception:  # the next start reads the columns from the sample instead
                log.debug("writing the estimator's view failed", exc_info=True)

    def persist(self, force: bool = False) -> bool:
        """Write the installed view's columns beside the store when due (`view_writes`); True when
        written."""
        view = self._view
        if self._file is None or view.stamp is None or view.version < 0:
            return False
        with self._lock:  # estimates add attribute paths and columns to the view
            key, paths, events, users = view.persisted(), dict(view.paths), view.events, view.users
        if events is None and users is None and not paths:
            return False
        file, stamp = self._file, view.stamp

        def write() -> None:
            instants = view.instants.chunks
            every = np.sort(np.concatenate(instants)) if instants else np.zeros(0, dtype=np.int64)
            view_file.write(file, stamp, view_file.Columns(view.index.mpids, every, users, events, paths))

        return self._writes.write_if_due(key, view.whole, force, write)

    def _in_use(self) -> bool:
        now = time.monotonic() * 1000
        return any(now - e.used_ms < CACHE_TTL_MS for e in list(self._cache.values()))

    def _renew(self, con: duckdb.DuckDBPyConnection) -> None:
        """Recompute a mask in use once it is old enough, or once it stops serving soon after the
        latest requested instant (then at that instant), so estimates rarely meet an expired one;
        one per cycle, so a waiting estimate's refresh is not held up for long."""
        view, now, latest = self._view, time.monotonic() * 1000, self._latest_now_ms
        with self._lock:
            due = [
                (not self._ends_soon(e, latest), e.at_ms, k, e)
                for k, e in self._cache.items()
                if now - e.used_ms < CACHE_TTL_MS
                and (now - e.at_ms > RENEW_AFTER_MS or self._ends_soon(e, latest))
            ]
        if not due:
            return
        _, _, key, entry = min(due, key=lambda d: d[:2])
        at = latest if self._ends_soon(entry, latest) else entry.now_ms
        mask = self._evaluate_leaf(entry.leaf, at, con, view, read_events=False)
        until = entry.leaf.until(view.instants, at)
        with self._lock:
            if self._view is view and self._cache.get(key) is entry:
                entry.mask, entry.at_ms, entry.now_ms, entry.until_ms = mask, now, at, until

    @staticmethod
    def _ends_soon(entry: _Entry, latest_ms: int) -> bool:
        """A mask that serves a long span, the latest requested instant included, stops serving soon
        after it (a mask serving other instants is left to the estimates asking for them)."""
        long_span = entry.until_ms - entry.now_ms >= RENEW_AHEAD_MS
        return long_span and entry.serves(latest_ms) and entry.until_ms - latest_ms < RENEW_AHEAD_MS

    def _await_refresh(self, wait_ms: int) -> None:
        """Wait (a little) until the installed view holds every batch accepted before now; raise
        what a refresh started meanwhile raised. Nothing accepted since the view's refresh read
        the store (or a refresh already running read it): no wait."""
        with self._lock:  # the request connection is shared with other estimates
            accepted = self.sample.latest_batch(self.con)
        with self._cycles:
            if self._covered >= accepted:
                return
            wanted = self._started + 1
        self._wake_worker()
        deadline = time.monotonic() + wait_ms / 1000
        with self._cycles:
            while self._covered < accepted:
                if self._finished >= wanted and self._error is not None:
                    raise self._error
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # still running: estimate from the last installed view
                self._cycles.wait(left)

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

    def _sync(self, con: duckdb.DuckDBPyConnection, ahead: bool = False) -> None:
        """Install a view of the sample's current version, cached masks patched or dropped; the
        columns estimates read are carried over, only the changed users' rows read again. A view read
        whole (a rebuild) holds the columns read before, and with `ahead` (the worker: estimates use
        the previous view meanwhile) on first use the event and user columns every journey reads,
        and the attribute paths the file beside the store (of an earlier sample) holds."""
        version = self.sample.version
        old = self._view
        if version == old.version:
            old.population = self.sample.population  # batches of unsampled users only: it may grow
            return
        s = self.sample
        size, population, exact = s.size, s.population, s.exact
        if old.version < 0:
            opened = self._opened()
            if opened is not None and opened.version == version:
                with self._lock:
                    self._view = opened
                    self._cache.clear()
                return
            old = opened or old
        changed = s.changed_since(old.version) if old.version >= 0 else None
        with self._lock:
            entries = list(self._cache.items())
        patched: list[tuple[tuple[Any, ...], _Entry, Mask]] = []
        if changed is not None and changed.shape[0] <= PATCH_SHARE * max(len(old.index), 1):
            view = View(version, old.index, size, population, exact, stamp=s.stamp)
            appended, instants = self._carried(con, old, view, changed)
            view.instants = old.instants.add(instants)
            if entries:
                patched = self._patch(con, old, view, changed, entries, appended)
        else:
            index = SampleIndex(as_ids(con.execute("SELECT mpid FROM sample.users").fetchnumpy()["mpid"]))
            every = Instants().add(self._instants(con, None))
            view = View(version, index, size, population, exact, every, stamp=s.stamp, whole=True)
            # what estimates read before is read again here, off their path
            first = ahead and old.version < 0
            if old.users is not None or first:
                view.users = load_users(con, index)
            if old.events is not None or first:
                view.events = load_events(con, index)
            # on first use, the attribute paths of the file of an earlier sample (estimates read them)
            for path in view_file.paths_of(self._file) if first else list(old.paths):
                self._path_values(path, con, view)
        with self._lock:
            self._view = view
            kept = {}
            for key, entry, mask in patched:
                if self._cache.get(key) is entry:  # not replaced meanwhile
                    entry.mask = mask
                    entry.until_ms = entry.leaf.until(view.instants, entry.now_ms)  # new events count too
                    kept[key] = entry
            self._cache.clear()  # entries computed meanwhile were over the old index
            self._cache.update(kept)

    def _opened(self) -> View | None:
        """A view read from the file beside the store, when it holds the sample's current version or
        the one adopted at start (then brought to the current one like any earlier view)."""
        s = self.sample
        if self._file is None or s.stamp is None:
            return None
        held = [(s.version, s.stamp)]
        if s.adopted is not None and s.adopted[0] != s.version:
            held.append(s.adopted)
        for version, stamp in held:
            cols = view_file.read(self._file, stamp, stamp[5])
            if cols is not None:
                view = View(
                    version,
                    SampleIndex(cols.mpids),
                    stamp[5],
                    s.population,
                    s.exact,
                    Instants((cols.instants,)),
                    dict(cols.paths),
                    cols.events,
                    cols.users,
                    stamp,
                )
                self._writes.opened(view.persisted())
                return view
        return None

    def _carried(
        self, con: duckdb.DuckDBPyConnection, old: View, view: View, changed: Ids
    ) -> tuple[EventColumns | None, Ids]:
        """`view` (of the sample's current version) given `old`'s index and columns, where only the
        `changed` users differ: their rows are read again, everyone else's kept. Returns the changed
        users' events as columns of their own (None when `old` had none read) and their instants."""
        paths = list(dict(old.paths))
        extracts = "".join(
            f", CAST(json_extract(attributes, {exp.Literal.string(p).sql(dialect='duckdb')}) AS VARCHAR) AS v{i}"
            for i, p in enumerate(paths)
        )
        milepost_changed_users = pa.table({"mpid": pa.array(changed, pa.int64())})  # noqa: F841 (CHANGED_TABLE)
        users = con.sql(
            f"SELECT mpid, first_seen, last_seen, inputs{extracts} FROM sample.users "
            f"WHERE mpid IN (SELECT mpid FROM {CHANGED_TABLE})"
        ).to_arrow_table()
        present = as_ids(users.column("mpid").to_numpy())
        index = view.index = old.index.with_users(changed, present)
        moved = None if index is old.index else index.positions_of(old.index.mpids)
        if old.users is not None:
            view.users = update_users(old.users, old.index, index, changed, users)
        rows = index.positions_of(present)
        held = users.filter(pa.array(rows >= 0))
        for i, path in enumerate(paths):
            values = held.select([f"v{i}"]).rename_columns(["v"])
            view.paths[path] = updated_values(old.paths[path], moved, len(index), values, rows[rows >= 0])
        if old.events is None:
            return None, self._instants(con, changed)
        view.events, appended = update_events(con, old.events, old.index, index, changed)
        seen = [as_ids(users.column(c).drop_null().to_numpy()) for c in ("first_seen", "last_seen")]
        return appended, np.concatenate([appended.ts[appended.ts_known], *seen])

    def _instants(self, con: duckdb.DuckDBPyConnection, users: np.ndarray | None) -> np.ndarray:
        """The event and seen times of the given sampled users (of all of them when None)."""
        own = "" if users is None else " AND mpid IN (SELECT mpid FROM milepost_instants_of)"
        if users is not None:
            con.register("milepost_instants_of", pa.table({"mpid": pa.array(users, pa.int64())}))
        try:
            found = con.execute(
                f"SELECT ts AS t FROM sample.events WHERE ts IS NOT NULL{own} "
                f"UNION ALL SELECT first_seen FROM sample.users WHERE first_seen IS NOT NULL{own} "
                f"UNION ALL SELECT last_seen FROM sample.users WHERE last_seen IS NOT NULL{own}"
            ).fetchnumpy()["t"]
        finally:
            if users is not None:
                con.unregister("milepost_instants_of")
        return as_ids(found)

    def _patch(
        self,
        con: duckdb.DuckDBPyConnection,
        old: View,
        view: View,
        changed: np.ndarray,
        entries: list[tuple[tuple[Any, ...], _Entry]],
        appended: EventColumns | None,
    ) -> list[tuple[tuple[Any, ...], _Entry, Mask]]:
        """Each cached mask brought to `view`: recomputed from the view's columns when they hold what
        its criterion reads, else re-evaluated on the changed users only (the others keep their rows)."""
        rows = view.index.positions(changed)
        out, rest = [], []
        for key, entry in entries:
            mask = self._patched(con, old, view, rows, entry, appended)
            if mask is None:
                rest.append((key, entry))
            else:
                out.append((key, entry, mask))
        if rest:
            out.extend(self._patch_sql(con, old.index, view.index, changed, rest))
        return out

    def _patched(
        self,
        con: duckdb.DuckDBPyConnection,
        old: View,
        view: View,
        rows: np.ndarray,
        entry: _Entry,
        appended: EventColumns | None,
    ) -> Mask | None:
        """`entry`'s mask over `view` from the columns (None when they do not hold what it reads):
        a root or an attribute criterion whole, an event criterion on the changed users' events."""
        leaf, now_ms = entry.leaf, entry.now_ms
        if isinstance(leaf, RootLeaf):
            return None if view.users is None else view.users.root(leaf.input_ids, now_ms, leaf.lifetime_ms)
        if leaf.events is not None:
            if appended is None:
                return None
            try:
                changed = evaluate_events(
                    con, appended, len(view.index), leaf.events, replace(leaf.ctx, now_ms=now_ms)
                )
            except OverflowError:
                return None
            mask = entry.mask.copy() if view.index is old.index else view.index.carry(entry.mask, old.index)
            mask[rows] = changed[rows]
            return mask
        compiled = leaf.compiled(now_ms)
        if compiled.attributes is None or not all(p in view.paths for p in compiled.attributes.paths):
            return None
        return self._evaluate(compiled.sql, compiled.attributes, con, view)

    def _patch_sql(
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
                    sql = entry.leaf.compiled(entry.now_ms).sql
                    mask[index.positions(self._fetch(sql, con))] = True
                    out.append((key, entry, mask))
            finally:
                con.execute(f"SET search_path = {self._path}").fetchall()
            return out
        finally:
            con.unregister("milepost_changed")

    def _fetch(self, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> np.ndarray:
        result = (con or self.con).execute(sql).fetchnumpy()
        return as_ids(next(iter(result.values())))

    def _mask(self, key: tuple[Any, ...], leaf: Leaf, now_ms: int) -> Mask:
        """Sampled members of `leaf` at `now_ms`, from the cache while its answer still holds."""
        hit = self._cache.get(key)
        now = time.monotonic() * 1000
        if hit is not None and now - hit.at_ms < STALE_TTL_MS and hit.serves(now_ms):
            hit.used_ms = now
            if now - hit.at_ms >= CACHE_TTL_MS:
                self._wake_worker()  # expired but patched: serve it while the worker renews it
            return hit.mask
        view = self._view
        mask = self._evaluate_leaf(leaf, now_ms, self.con, view)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        until = leaf.until(view.instants, now_ms)
        self._cache[key] = _Entry(now, mask, now, leaf, now_ms, until)
        return mask

    def _evaluate_leaf(
        self,
        leaf: Leaf,
        now_ms: int,
        con: duckdb.DuckDBPyConnection,
        view: View,
        read_events: bool = True,
    ) -> Mask:
        """`leaf`'s members at `now_ms`; event counts in NumPy once the view's events are read (reading
        them is left to estimates: a renewal would read them for each new version of the sample); a
        journey root likewise over the view's users."""
        if isinstance(leaf, RootLeaf) and (read_events or view.users is not None):
            if view.users is None:
                view.users = load_users(con, view.index)
            return view.users.root(leaf.input_ids, now_ms, leaf.lifetime_ms)
        if leaf.events is not None and (read_events or view.events is not None):
            if view.events is None:
                view.events = load_events(con, view.index)
            ctx = replace(leaf.ctx, now_ms=now_ms)
            try:
                return evaluate_events(con, view.events, len(view.index), leaf.events, ctx)
            except OverflowError:  # event times or amounts beyond NumPy int64: the compiled query
                pass
        compiled = leaf.compiled(now_ms)
        return self._evaluate(compiled.sql, compiled.attributes, con, view)

    def _evaluate(
        self, sql: str, attributes: AttributeLeaf | None, con: duckdb.DuckDBPyConnection, view: View
    ) -> Mask:
        if attributes is None:
            return view.index.mask(self._fetch(sql, con))
        table, codes = distinct_table([self._path_values(p, con, view) for p in attributes.paths])
        milepost_distinct_values = table  # noqa: F841 (DISTINCT_TABLE, read by DuckDB's replacement scan)
        chosen = as_ids(next(iter(con.execute(attributes.sql).fetchnumpy().values())))
        return users_mask(codes, chosen, table.num_rows)

    def _path_values(self, path: str, con: duckdb.DuckDBPyConnection, view: View) -> PathValues:
        found = view.paths.get(path)
        if found is None:
            literal = exp.Literal.string(path).sql(dialect="duckdb")
            users = con.sql(
                f"SELECT mpid, CAST(json_extract(attributes, {literal}) AS VARCHAR) AS v FROM sample.users"
            ).to_arrow_table()
            held, rows = view.index.held(users)
            found = path_values(held, rows, len(view.index))
            view.paths[path] = found
        return found

    def root(self, input_ids: tuple[int, ...], now_ms: int, lifetime_ms: int) -> Mask:
        key = ("root", input_ids, lifetime_ms)
        return self._mask(key, self._leaf(key, lambda: RootLeaf(input_ids, lifetime_ms)), now_ms)

    def _leaf(self, key: tuple[Any, ...], make: Callable[[], Leaf]) -> Leaf:
        found = self._leaves.get(key)
        if found is None:
            found = make()
            if len(self._leaves) >= CACHE_ENTRIES:
                self._leaves.clear()
            self._leaves[key] = found
        return found

    def criterion(self, criteria: Criteria, ctx: CompileContext) -> Mask:
        calc = used_calculated(criteria, ctx.calculated)
        key = (
            "c",
            orjson.dumps(to_json(criteria), option=orjson.OPT_SORT_KEYS),
            ctx.input_ids,
            ctx.parent_audience_id,
            ctx.lookback_ms,
            tuple(c.model_dump_json() for c in calc),
        )

        def make() -> Leaf:
            spans = durations(criteria, calc, ctx.lookback_ms, ctx.lookback_ms)
            return Leaf(criteria, replace(ctx, calculated={c.name: c for c in calc}), spans)

        return self._mask(key, self._leaf(key, make), ctx.now_ms)

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
        self._latest_now_ms = now_ms
        quiet = self.demand.ask()
        if not self._built:
            self.refresh()
        else:
            self._await_refresh(CATCH_UP_WAIT_MS if quiet else REFRESH_WAIT_MS)
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
            unsaved = self._file is not None and self._view.persisted() != self._writes.written
        if unsaved:
            self._wake_worker()  # columns read on this request: the worker writes them beside the store
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
