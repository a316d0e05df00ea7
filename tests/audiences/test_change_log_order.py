"""The change log's order: step by step, removes before adds, then (audience, user), numbered from
the seq given, on a store file and with enough rows that DuckDB sorts them in parallel."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from milepost.engines.duckdb import DuckDBStore
from milepost.engines.duckdb_membership import ensure_membership_tables, log_changes_sql

ROWS = 300_000


def _changes(seed: int) -> list[tuple[int, int, int, bool]]:
    rng = random.Random(seed)
    rows = {
        (rng.randint(1, 5), rng.choice((-1, 7, 8, 9)), rng.randint(1, 2_000_000), rng.random() < 0.3)
        for _ in range(ROWS)
    }
    shuffled = sorted(rows)
    rng.shuffle(shuffled)
    return shuffled


def test_the_log_is_numbered_in_step_action_audience_user_order(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    con = store.connect()
    try:
        ensure_membership_tables(con)
        con.execute("SET threads = 4").fetchall()
        rows = _changes(3)
        step, audience, mpid, added = (list(c) for c in zip(*rows, strict=True))
        table = pa.table({"step": step, "audience_id": audience, "mpid": mpid, "added": added})
        con.register("changes_in", table)
        con.execute(
            "CREATE TEMP TABLE changes AS SELECT step::INTEGER AS step, audience_id::BIGINT AS audience_id, "
            "mpid::BIGINT AS mpid, added FROM changes_in"
        ).fetchall()
        con.unregister("changes_in")
        ingest = sorted({m for _, _, m, _ in rows[::7]})
        con.register("ingest_in", pa.table({"mpid": pa.array(ingest, pa.int64())}))
        con.execute("CREATE TEMP TABLE eval_ingest AS SELECT mpid FROM ingest_in").fetchall()
        con.unregister("ingest_in")
        cause = "CASE WHEN mpid IN (SELECT mpid FROM eval_ingest) THEN 'ingest' ELSE 'timer' END"
        con.execute(log_changes_sql("changes", 41, 5, cause, 6)).fetchall()

        logged = con.execute(
            "SELECT seq, audience_id, mpid, action, changed_at, cause, recorded_at FROM membership_changes"
        ).fetchall()
        # Journey roots (audience ids below 1) are not logged; the rest are numbered 42, 43, ...
        # step by step, removes (added false) before adds, then by audience and user.
        kept = sorted((s, add, a, m) for s, a, m, add in rows if a > 0)
        in_ingest = set(ingest)
        expected = [
            (42 + i, a, m, "add" if add else "remove", 5, "ingest" if m in in_ingest else "timer", 6)
            for i, (_, add, a, m) in enumerate(kept)
        ]
        assert sorted(logged) == expected
    finally:
        con.close()
        store.close()
