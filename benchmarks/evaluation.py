"""What one real-time evaluation costs at scale: its users' events held by user, against scanned.

Builds the store and the 50 maintained audiences of `engine.py` (`--users`, about 10 events
each), lets the first full calculation finish, then evaluates `--evaluations` batches of `--batch`
random users, one day ahead, in process and alone. Batches alternate between the two ways of
copying the candidates' events (ADR 0007), in the order ABBA, so that a drift in the machine's
speed falls on both:

- held: from the events held by user (`audiences/user_events.py`), and the store's newest;
- scanned: a semi-join on `mpid` over the store's `events`, which reads every row group.

Printed: how long reading and sorting the events took and how much the process's resident memory
grew, how long finding a batch's rows among them takes, then per evaluation the median and mean of
wall time and of the process's CPU (DuckDB's worker threads included) for each way, and their
ratios.

Usage: python benchmarks/evaluation.py [--users N] [--batch K] [--evaluations E]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from milepost.audiences.user_events import UserEvents, UserEventsSettings
from milepost.config import Config
from milepost.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine.py, the benchmark beside this one
from engine import DAY, create_catalog_journeys, load_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.server import init_data_dir


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mib() -> float:
    """The process's resident memory now (the load before has its own peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000, help="users per evaluation")
    ap.add_argument("--evaluations", type=int, default=16, help="evaluations per way")
    args = ap.parse_args()
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="milepost-eval-") as tmp:
        data_dir = Path(tmp) / "data"
        init_data_dir(data_dir)
        loaded = load_store(data_dir / "store", args.users, now)
        print(f"store: {loaded['users']:,} users, {loaded['events']:,} events", flush=True)
        create_catalog_journeys(data_dir)
        rt = Runtime.open(Config.from_env(data_dir))
        try:
            rt.journeys.settle()
            engine = rt.audiences
            stored = engine.user_events.stored
            scanned = UserEvents(engine.con, stored, UserEventsSettings(min_events=sys.maxsize))
            held = UserEvents(engine.con, stored, UserEventsSettings(wait=True))
            before, t0, c0 = rss_mib(), time.perf_counter(), cpu_s()
            columns = engine._copies.event_columns(
                engine._compiled(engine._plan).columns
            )  # those the plan reads
            events = held.get(columns, lambda sql: engine.con.execute(sql).fetchall())
            if events is None:
                raise SystemExit("the events were not held: is the store large enough?")
            print(
                f"events held by user: {events.rows:,} rows ({events.columns}) read and sorted in "
                f"{time.perf_counter() - t0:.1f} s wall, {cpu_s() - c0:.1f} s CPU; "
                f"resident memory {before:,.0f} -> {rss_mib():,.0f} MiB",
                flush=True,
            )
            rng = random.Random(1)
            finds = []
            for _ in range(20):
                users = rng.sample(range(1, args.users + 1), args.batch)
                t0 = time.perf_counter()
                events.take(users)
                finds.append(time.perf_counter() - t0)
            print(
                f"finding {args.batch:,} random users' rows: median {statistics.median(finds) * 1000:.1f} ms (20 times)"
            )
            spent: dict[str, list[tuple[float, float]]] = {"held": [], "scanned": []}
            ways = {"held": held, "scanned": scanned}
            order = ["held", "scanned", "scanned", "held"]
            for i in range(2 * args.evaluations):
                way = order[i % 4]
                engine.user_events = ways[way]
                users = rng.sample(range(1, args.users + 1), args.batch)
                t0, c0 = time.perf_counter(), cpu_s()
                engine.evaluate(now + DAY + i, users, "ingest")
                spent[way].append((time.perf_counter() - t0, cpu_s() - c0))
            print(
                f"\nper evaluation of {args.batch:,} random users ({args.evaluations} each, alone, in process):"
            )
            print(f"  {'':8} {'wall median':>12} {'wall mean':>10} {'CPU median':>11} {'CPU mean':>9}")
            figures = {}
            for way, rows in spent.items():
                walls, cpus = [w * 1000 for w, _ in rows], [c * 1000 for _, c in rows]
                figures[way] = (
                    statistics.median(walls),
                    statistics.mean(walls),
                    statistics.median(cpus),
                    statistics.mean(cpus),
                )
                print(
                    f"  {way:8} "
                    + " ".join(f"{v:>{n}.0f} ms" for v, n in zip(figures[way], (9, 7, 8, 6), strict=True))
                )
            ratio = [h / s for h, s in zip(figures["held"], figures["scanned"], strict=True)]
            print("  held / scanned: " + ", ".join(f"{r:.2f}" for r in ratio) + " (same columns)")
        finally:
            rt.close()


if __name__ == "__main__":
    main()
