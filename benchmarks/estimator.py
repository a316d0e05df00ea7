"""Estimator latency (SPEC §5: an estimate within 50 ms at p95 whatever the number of users).

For each population size, users and events are bulk-loaded straight into a fresh store
(tests/estimator/population.py) and the estimator is built with the production sample target
(40,000). Then, for a milestone with 5 criteria (attribute, event count, event with a `where`,
commerce sum, sequence), i.e. the audience and its 5 per-criterion estimates:
  - idle, warm (leaf masks cached, the same `now`), on a live clock (warm, but `now` advances 5 s
    per call: cached answers are served while they hold, see `audiences.validity`), leaves cold
    (`Estimator._cache` cleared before each call; compiled SQL and the sample's per-path attribute
    values, event columns and user columns kept) and all cold (nothing in memory, as after a
    restart: the view of the sample opened again from its file beside the store, every leaf
    compiled and evaluated again);
  - a single-criterion edit: one criterion changed, the other four cached;
  - the exact full calculation of the same audience and of each criterion alone (the compiled
    query full calculation runs, counted on the whole store), next to the estimate of that
    criterion alone on the sample, leaves cold (ratio per criterion type);
  - the same milestone estimate, as served (sample refresh and mask patching included), while a
    load generator in another process sends bulk requests (100 batches x 10 events, JSON) paced
    to 20,000 events/s; this process parses and normalises them and commits them through the
    group-commit writer, as the server does (HTTP aside). The achieved commit rate is printed;
  - after a restart: a new estimator's first estimate of the milestone (the stored sample adopted
    and caught up, or rebuilt when its state does not match the store; the view's columns opened
    from the file the previous estimator wrote beside the store, when it holds that sample).
Wall-clock and CPU (process time, all threads) are printed: on a shared machine the wall clock
includes time spent waiting for a core.

Usage: python benchmarks/estimator.py [--sizes 1000000,10000000] [--events 5,2.5] [--reps 40]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson
from tests.estimator.population import DAY, LIFETIME, LOOKBACK, T0, load_population

from milepost.audiences.estimator import Estimator
from milepost.audiences.masks import SampleIndex
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.audiences.view_file import View
from milepost.criteria import CompileContext, compile_criteria, parse_criteria, to_sql
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows
from milepost.ingest.writer import IngestWriter
from milepost.model.batch import IngestRequest

WINDOWS = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)
INPUTS = (1, 2)
WATCH = {"event_type": "custom_event", "name": "watch"}
CRITERIA: dict[str, dict[str, Any]] = {
    "attribute": {"type": "user_attribute", "attribute": "score", "op": "greater_than", "value": 300},
    "event count": {
        "type": "event",
        "event": WATCH,
        "having": {"fn": "count", "op": "greater_or_equal", "value": 2},
        "window": {"last": {"amount": 30, "unit": "days"}},
    },
    "event where": {
        "type": "event",
        "event": WATCH,
        "where": [{"attribute": "genre", "op": "equals", "value": "drama"}],
        "window": {"last": {"amount": 60, "unit": "days"}},
    },
    "commerce sum": {
        "type": "event",
        "event": {"event_type": "commerce_event", "action": "purchase"},
        "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 50},
    },
    "sequence": {
        "type": "sequence",
        "first": {"event_type": "custom_event", "name": "search"},
        "then": WATCH,
        "within": {"amount": 7, "unit": "days"},
        "completed": True,
        "window": {"last": {"amount": 90, "unit": "days"}},
    },
}


def milestone_journey(parts: list[dict[str, Any]]) -> JourneyRows:
    # "any" keeps the audience large enough to be an estimate whatever the thresholds
    crit = {"any": parts}
    return JourneyRows(1, "bench", INPUTS, (MilestoneRow(1, 1, None, 0, "m", 101, crit, False),))


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, CPU ms of the whole process)."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def line(label: str, walls: list[float], cpus: list[float], target: float | None) -> dict[str, float]:
    p50, p95 = pct(walls, 0.5), pct(walls, 0.95)
    c50 = statistics.median(cpus)
    verdict = (
        "" if target is None else f"   target p95 <= {target:.0f} ms: {'met' if p95 <= target else 'NOT met'}"
    )
    print(f"  {label:<44} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  (CPU p50 {c50:7.1f} ms){verdict}")
    return {"p50": p50, "p95": p95, "cpu50": c50}


def generate(out: Any, stop: Any, mpids: list[int], rate: float) -> None:
    """The load generator (its own process): bulk request bodies for existing users, paced to `rate`."""
    rng = random.Random(42)
    bodies = []
    for _ in range(60):
        batches = []
        for _ in range(100):
            events = [
                {
                    "event_type": "custom_event",
                    "data": {
                        "event_name": rng.choice(["watch", "search", "share"]),
                        "custom_event_type": "media",
                        "timestamp_unixtime_ms": T0 - rng.randrange(3_600_000),
                        "custom_attributes": {"genre": "drama", "minutes": rng.randrange(120)},
                    },
                }
                for _ in range(10)
            ]
            batches.append({"mpid": rng.choice(mpids), "environment": "production", "events": events})
        bodies.append(orjson.dumps(batches))
    start, sent = time.perf_counter(), 0
    while not stop.is_set():
        wait = start + sent * EVENTS_PER_REQUEST / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        try:
            out.put(bodies[sent % len(bodies)], timeout=0.5)
        except queue.Full:
            continue  # the server is behind: the achieved rate shows it
        sent += 1


EVENTS_PER_REQUEST = 1_000
MAX_BACKLOG = 4  # requests queued at the writer, at most


MIN_INGEST_S = 15.0  # estimates under ingest are taken over at least this long


class Ingest:
    """The server side of the load: parse, normalise, commit through the group-commit writer."""

    def __init__(self, store: DuckDBStore, mpids: list[int], rate: float) -> None:
        ctx = mp.get_context("spawn")
        self.bodies: Any = ctx.Queue(maxsize=8)
        self.stop_generator = ctx.Event()
        self.generator = ctx.Process(target=generate, args=(self.bodies, self.stop_generator, mpids, rate))
        self.writer = IngestWriter(store, lambda: WINDOWS, seed=1)
        self.committed: list[tuple[float, int]] = []  # (when, events) per committed request
        self._stop = threading.Event()
        self._receiver = threading.Thread(target=self._receive, daemon=True)

    def start(self) -> None:
        self.writer.start()
        self.generator.start()
        self._receiver.start()

    def _receive(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                body = self.bodies.get(timeout=0.5)
            except queue.Empty:
                continue
            while self.writer.backlog >= MAX_BACKLOG and not self._stop.is_set():
                time.sleep(0.005)  # the writer is behind: hold back (the generator then blocks)
            n += 1
            normalized, _ = normalize_request(
                orjson.loads(body), bulk=True, historical=False, received_at=T0 + n
            )
            events = sum(len(b.events) for b in normalized)
            fut = self.writer.submit(IngestRequest(1 + n % 2, T0 + n, normalized))
            fut.add_done_callback(lambda _f, e=events: self.committed.append((time.perf_counter(), e)))

    def rate(self, since: float, until: float) -> float:
        events = sum(e for t, e in list(self.committed) if since <= t < until)
        return events / max(until - since, 1e-9)

    def stop(self) -> None:
        self.stop_generator.set()
        self._stop.set()
        self._receiver.join()
        self.generator.join(10)
        if self.generator.is_alive():
            self.generator.kill()
        self.writer.stop(timeout=3600)  # the store closes next: its commits must be over


def run_size(users: int, events_per_user: float, reps: int, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"users": users}
    store = DuckDBStore(workdir / f"store-{users}")
    con = store.connect()
    t = time.perf_counter()
    chunk = 1_000_000
    for first in range(0, users, chunk):
        load_population(con, min(chunk, users - first), seed=1, events_per_user=events_per_user, first=first)
    n_events = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
    # opened again so ingest numbers its events after the loaded ones (else the sample, which takes
    # events past the last one it holds, would never see the ingested events)
    con.close()
    store.close()
    store = DuckDBStore(workdir / f"store-{users}")
    con = store.connect()
    out["load_s"] = time.perf_counter() - t
    out["events"] = n_events
    print(f"\n{users:,} users, {n_events:,} events (loaded in {out['load_s']:.0f} s)")

    est = Estimator(store.connect())  # production target
    build_ms, _ = timed(est.refresh)
    out["sample"] = est.sample.size
    print(
        f"  sample: {est.sample.size:,} users (rate 1/{round(est.sample.population / max(est.sample.size, 1))}), built in {build_ms / 1000:.1f} s"
    )
    parts = list(CRITERIA.values())
    base = milestone_journey(parts)

    def estimate(j: JourneyRows = base, now: int = T0) -> dict[str, Any]:
        return est.journey(j, {}, {}, now, LOOKBACK, LIFETIME)

    size = estimate()[101].size
    print(f"  milestone size: {size}")

    def warm() -> None:
        estimate()

    clock = [T0]

    def live() -> None:
        clock[0] += 5_000
        estimate(now=clock[0])

    def cold() -> None:
        est._cache.clear()
        estimate()

    def all_cold() -> None:
        # nothing in memory, as after a restart: the view (index, columns, attribute values) is
        # opened again from its file beside the store, then every leaf compiled and evaluated
        est._cache.clear()
        est._leaves.clear()
        est._view = View(-1, SampleIndex(np.zeros(0, dtype=np.int64)), 0, 0, True)
        estimate()

    estimate()
    est.persist()  # what the worker does once the sample stays unchanged: the file of this view
    for label, key, fn in [
        ("5-criteria milestone, idle, warm", "warm", warm),
        ("5-criteria milestone, idle, live clock (+5 s/call)", "live", live),
        ("5-criteria milestone, idle, leaves cold", "cold", cold),
        ("5-criteria milestone, idle, all cold (view from its file)", "all_cold", all_cold),
    ]:
        walls, cpus = zip(*(timed(fn) for _ in range(reps)), strict=True)
        out[key] = line(label, list(walls), list(cpus), 50)

    edit_w, edit_c = [], []
    for k in range(reps):
        estimate()  # the four others cached and fresh
        edited = [{**parts[0], "value": 301 + k}, *parts[1:]]
        w, c = timed(lambda e=edited: estimate(milestone_journey(e)))
        edit_w.append(w)
        edit_c.append(c)
    out["edit"] = line("single-criterion edit (4 of 5 cached)", edit_w, edit_c, 15)

    # exact full calculation vs the estimate, per criterion type
    ctx = CompileContext(now_ms=T0, lookback_ms=LOOKBACK, input_ids=INPUTS, parent_audience_id=-1)
    full = store.connect()
    exact_reps = 3 if users <= 2_000_000 else 1
    rows = []
    for name, crit in [("whole milestone (any of 5)", {"any": parts}), *CRITERIA.items()]:
        sql = to_sql(compile_criteria(parse_criteria(crit), ctx))
        exact_ms = min(
            timed(lambda s=sql: full.execute(f"SELECT count(*) FROM ({s})").fetchall())[0]
            for _ in range(exact_reps)
        )
        one = milestone_journey([crit]) if name in CRITERIA else base
        estimate(one)

        def cold_one(j: JourneyRows = one) -> None:
            est._cache.clear()
            estimate(j)

        est_ms = statistics.median(timed(cold_one)[0] for _ in range(max(5, reps // 4)))
        rows.append((name, exact_ms, est_ms))
        print(
            f"  exact full calculation of {name:<28} {exact_ms:9.1f} ms   estimate (leaves cold) {est_ms:7.1f} ms"
            f"   ratio {exact_ms / est_ms:7.1f}x"
        )
    out["exact"] = rows
    full.close()

    # the same milestone estimate, as served, while ingesting
    mpids = [int(r[0]) for r in con.execute("SELECT mpid FROM users USING SAMPLE 20000 ROWS").fetchall()]
    ingest = Ingest(store, mpids, 20_000.0)
    ingest.start()
    started = time.perf_counter()
    # the generator process starts and the writer opens the store (minutes at 10 M users): measure
    # only once commits flow, and for long enough that the rate means something
    while not ingest.committed and time.perf_counter() - started < 600:
        time.sleep(0.1)
    time.sleep(2.0)
    version = est.sample.version
    load_w, load_c = [], []
    since = time.perf_counter()
    while len(load_w) < reps or time.perf_counter() - since < MIN_INGEST_S:
        w, c = timed(estimate)
        load_w.append(w)
        load_c.append(c)
        time.sleep(0.05)
    until = time.perf_counter()
    rate = ingest.rate(since, until)
    commits = ingest.writer.commits
    ingest.stop()
    out["ingest_rate"] = rate
    out["under_ingest"] = line("5-criteria milestone under ingest (as served)", load_w, load_c, 100)
    print(
        f"  achieved ingest rate while measuring: {rate:,.0f} events/s committed (target 20,000; "
        f"{commits} group commits in all); the sample changed {est.sample.version - version} times (cached masks patched)"
    )
    est.close()
    est.con.close()

    # a server restart: a new estimator's first estimate (it adopts the stored sample on first use)
    restart_w, restart_c = [], []
    for _ in range(3 if users <= 2_000_000 else 1):
        fresh = Estimator(store.connect())
        w, c = timed(lambda e=fresh: e.journey(base, {}, {}, T0, LOOKBACK, LIFETIME))
        restart_w.append(w)
        restart_c.append(c)
        fresh.close()
        fresh.con.close()
    out["restart"] = line("after a restart, first estimate", restart_w, restart_c, None)
    con.close()
    store.close()
    shutil.rmtree(workdir / f"store-{users}", ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--events", default="5,2.5", help="mean events per user, per size")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    events = [float(e) for e in args.events.split(",")]
    events = (events + [events[-1]] * len(sizes))[: len(sizes)]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="milepost-estimator-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    try:
        for users, per_user in zip(sizes, events, strict=True):
            run_size(users, per_user, args.reps, workdir)
            print(f"  load average now {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
