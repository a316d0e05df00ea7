"""What one group of delivery acknowledgements costs the store, without HTTP or partners.

Under load an evaluation wakes many connections at once, and their acknowledged batches are written
together (`milepost.outputs.ack_writer`): the connections' state rows, the MPIDs each partner no
longer has (recorded to be applied in bulk) and those it now has (rows of `delivered`). This
builds a store whose `delivered` holds `--rows` rows over `--connections` connections (8.5 M rows
is what phase A of `engine.py` leaves at 1 M users), then writes `--groups` groups through the
ack writer's own path, each of `--group` connections with `--per` removes and `--per` adds.

Printed per group: the median and mean of the writing thread's CPU, of the process's CPU (DuckDB's
worker threads included) and of wall time. The mean includes the bulk applies of waiting removes
(one every `APPLY_REMOVED_AT` removes); the median mostly does not.

The same groups are then written to a second store whose `delivered` has no key: what the key's
index costs the acknowledgements (the adds here are all new, so the path never needs the key).

Usage: python benchmarks/ack_groups.py [--rows N] [--groups G] [--group C] [--per K]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from milepost.outputs.ack_writer import APPLY_REMOVED_AT, Ack, commit_acks
from milepost.outputs.state import DELIVERY_DDL, STREAM, DeliveryState, DeliveryStore

# MPIDs spread over the 63-bit range as real ones are (the key's index costs more so than for
# consecutive numbers): the i-th user's MPID, in Python and in SQL.
_SPREAD = 0x9E3779B97F4A7C15
_SPREAD_SQL = f"((m::HUGEINT * {_SPREAD}) % {2**63})::BIGINT"


def spread(i: int) -> int:
    return (i * _SPREAD) % 2**63


def build(path: Path, rows: int, connections: int, *, keyed: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    DeliveryStore.create_tables(con)
    if not keyed:  # the stored table's columns, without its key (a copy keeps no constraint)
        view = next(ddl for ddl in DELIVERY_DDL if "VIEW delivered_now" in ddl)
        for sql in (
            "CREATE TABLE delivered_unkeyed AS FROM delivered LIMIT 0",
            "DROP VIEW delivered_now",
            "DROP TABLE delivered",
            "ALTER TABLE delivered_unkeyed RENAME TO delivered",
            view,
        ):
            con.execute(sql).fetchall()
    per = rows // connections
    con.execute(
        f"INSERT INTO delivered SELECT c, {_SPREAD_SQL}, '[{{\"customer_id\":\"u' || m || '\"}},[]]' "
        "FROM range(1, $n + 1) cs(c), range(1, $per + 1) ms(m)",
        {"n": connections, "per": per},
    ).fetchall()
    con.execute("CHECKPOINT").fetchall()
    return con


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8_500_000, help="rows of `delivered` before the groups")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--groups", type=int, default=60, help="groups written")
    ap.add_argument("--group", type=int, default=25, help="connections per group")
    ap.add_argument("--per", type=int, default=80, help="removes and adds per connection and group")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="milepost-acks-"))
    try:
        rows = args.group * args.per * 2
        print(
            f"{args.groups} groups of {args.group} connections x ({args.per} removes + {args.per} adds) "
            f"= {rows:,} rows each, against {args.rows:,} delivered rows over {args.connections} "
            f"connections; waiting removes applied in bulk every {APPLY_REMOVED_AT:,}"
        )
        for keyed in (True, False):
            print(
                "delivered keyed on (connection_id, mpid), as stored" if keyed else "delivered without a key"
            )
            con = build(work / f"store-{keyed}.duckdb", args.rows, args.connections, keyed=keyed)
            for name, xs in zip(("writing thread CPU", "process CPU", "wall"), run(con, args), strict=True):
                med, mean = statistics.median(xs) * 1000, statistics.fmean(xs) * 1000
                print(
                    f"  {name:19s} median {med:6.1f} ms, mean {mean:6.1f} ms per group "
                    f"({mean * 1000 / rows:.2f} us per row)"
                )
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(con: duckdb.DuckDBPyConnection, args: argparse.Namespace) -> tuple[list[float], ...]:
    """Write the groups (the same ones for every store: a fixed seed); per group, the thread's CPU,
    the process's CPU and wall time in seconds."""
    rnd = random.Random(7)
    per = args.rows // args.connections
    # Each connection's users in a random order: removes take from the front, never twice.
    left = {
        c: rnd.sample(range(1, per + 1), min(per, args.per * args.groups))
        for c in range(1, args.connections + 1)
    }
    fresh = per + 1
    thread, process, wall = [], [], []
    for g in range(args.groups):
        acks = []
        for c in rnd.sample(range(1, args.connections + 1), args.group):
            removes = sorted(spread(i) for i in left[c][: args.per])
            del left[c][: args.per]
            adds = [spread(i) for i in range(fresh, fresh + args.per)]
            fresh += args.per
            forms: list[str | None] = [f'[{{"customer_id":"u{m}"}},[]]' for m in adds]
            acks.append(Ack(DeliveryState(c, phase=STREAM, cursor_seq=g).row(), removes, adds, forms))
        w, p, t = time.perf_counter(), time.process_time(), time.thread_time()
        commit_acks(con, acks)
        thread.append(time.thread_time() - t)
        process.append(time.process_time() - p)
        wall.append(time.perf_counter() - w)
    return thread, process, wall


if __name__ == "__main__":
    main()
