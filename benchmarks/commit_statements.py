"""Where a group commit of ingest mix (b) spends its CPU, statement by statement, without HTTP.

The requests of `ingest.py --mix b` (one batch of 100 events for one user each) are validated,
grouped as the writer groups them under load (16 requests by default), and committed to a fresh
store through the writer's own write path, except that the commit's statements run one at a time
so each can be timed. For each statement: how many commits ran it, and the median of its CPU on
the calling thread, of the whole process (DuckDB's worker threads included) and of wall time.
`--threads 1` shows what DuckDB's worker threads add to each statement.

Usage: python benchmarks/commit_statements.py [--requests N] [--group G] [--threads T]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest
from milepost.synthetic import single_user_requests

WINDOWS = DedupeWindows(request_ms=30 * 86_400_000, message_ms=7 * 86_400_000)
# Per statement kind: (thread CPU, process CPU, wall) of each run, in seconds.
TIMES: dict[str, list[tuple[float, float, float]]] = defaultdict(list)


def kind(statement: str) -> str:
    """A statement's verb and table, e.g. `INSERT INTO events`."""
    words = statement.split()
    return " ".join(words[:3] if words[0] == "INSERT" else words[:2])


class TimedStore(DuckDBStore):
    """The store's write path with the commit's statements run and timed one by one."""

    @staticmethod
    def _run(con: duckdb.DuckDBPyConnection, sql: str, **tables: pa.Table | None) -> list[Any]:
        for statement in sql.split(";\n"):
            thread, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
            DuckDBStore._run(con, statement, **tables)  # the store's own way of showing the tables to SQL
            TIMES[kind(statement)].append(
                (time.thread_time() - thread, time.process_time() - process, time.perf_counter() - wall)
            )
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1500, help="requests of one batch of 100 events")
    ap.add_argument("--group", type=int, default=16, help="requests per group commit")
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: DuckDB's default)")
    args = ap.parse_args()
    now = int(time.time() * 1000)
    requests = []
    for i, body in enumerate(single_user_requests(seed=2, requests=args.requests, events_per_batch=100)):
        at = now + i
        batches = normalize_request(
            orjson.loads(orjson.dumps(body)), bulk=True, historical=False, received_at=at
        )
        requests.append(IngestRequest(1, at, batches[0]))
    workdir = Path(tempfile.mkdtemp(prefix="milepost-statements-"))
    try:
        store = TimedStore(workdir, threads=args.threads or None)
        rng = random.Random(1)
        commits = []
        for i in range(0, len(requests), args.group):
            thread, process = time.thread_time(), time.process_time()
            store.apply(build_plan(requests[i : i + args.group], store, WINDOWS, rng))
            commits.append((time.thread_time() - thread, time.process_time() - process))
        store.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{len(commits)} commits of {args.group} requests (100 events each), DuckDB threads: {args.threads or 'default'}"
    )
    print(
        f"per commit (plan, Arrow tables, statements), median ms: thread "
        f"{statistics.median(c[0] for c in commits) * 1e3:.2f}, process {statistics.median(c[1] for c in commits) * 1e3:.2f}"
    )
    print(f"{'statement':28s} {'commits':>7s} {'thread ms':>10s} {'process ms':>11s} {'wall ms':>8s}")
    for name, runs in TIMES.items():
        thread, process, wall = (statistics.median(r[j] for r in runs) * 1e3 for j in range(3))
        print(f"{name:28s} {len(runs):7d} {thread:10.2f} {process:11.2f} {wall:8.2f}")


if __name__ == "__main__":
    main()
