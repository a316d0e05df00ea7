"""Upkeep beside the writer: the server checkpoints the store and writes sealed segments on threads of
its own, so no group commit waits for them."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=86_400_000, message_ms=86_400_000)


def _ingest(store: DuckDBStore, mpid: int) -> None:
    body = [
        {
            "mpid": mpid,
            "events": [
                {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
            ],
        }
    ]
    batches, _ = normalize_request(body, bulk=True, historical=False, received_at=T0 + mpid)
    store.apply(build_plan([IngestRequest(1, T0 + mpid, batches)], store, WINDOWS, random.Random(mpid)))


def _events(directory: Path) -> int:
    store = DuckDBStore(directory)
    try:
        return int(store.reader().execute("SELECT count(*) FROM events").fetchall()[0][0])
    finally:
        store.close()


def test_a_checkpoint_runs_only_once_the_wal_holds_enough(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    con = store.connect()
    _ingest(store, 1)
    before = store.wal_bytes()
    assert before > 0
    assert not store.checkpoint_ahead(con, at_bytes=before + 1)
    assert store.wal_bytes() == before
    assert store.checkpoint_ahead(con, at_bytes=before)
    assert store.wal_bytes() < before
    con.close()
    store.close()
    assert _events(tmp_path) == 1


def test_commits_beside_checkpoints_are_all_kept(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    done = threading.Event()
    ran: list[bool] = []

    def checkpoints() -> None:
        con = store.connect()
        while not done.is_set():
            ran.append(store.checkpoint_ahead(con, at_bytes=1))
        con.close()

    thread = threading.Thread(target=checkpoints)
    thread.start()
    try:
        for mpid in range(1, 201):
            _ingest(store, mpid)
    finally:
        done.set()
        thread.join()
    assert any(ran)
    store.close()
    assert _events(tmp_path) == 200


def test_events_committed_while_a_segment_is_written_go_to_the_next_segment(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    con = store.connect()
    for mpid in range(1, 6):
        _ingest(store, mpid)
    assert store.write_segment(con, min_rows=6) is None  # too few unsealed events: nothing written
    segment = store.write_segment(con, min_rows=5)
    assert segment is not None and segment.rows == 5
    _ingest(store, 6)  # committed between the segment's file and its record
    assert store.record_segment(segment) == 5
    reader = store.reader()
    # Sealed events stay in `events`; the segment holds a copy of them, for Spark.
    assert reader.execute("SELECT count(*), count(DISTINCT mpid) FROM events").fetchall() == [(6, 6)]
    sealed = reader.execute(f"SELECT mpid FROM read_parquet('{tmp_path / segment.path}')").fetchall()
    assert sorted(m for (m,) in sealed) == [1, 2, 3, 4, 5]
    assert store.write_segment(con, min_rows=2) is None
    following = store.write_segment(con, min_rows=1)
    assert following is not None and following.rows == 1
    assert following.min_id == following.max_id > segment.max_id
    con.close()
    store.close()
    assert _events(tmp_path) == 6


def test_a_segment_written_but_not_recorded_is_swept_at_the_next_open(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    con = store.connect()
    _ingest(store, 1)
    segment = store.write_segment(con, min_rows=1)
    assert segment is not None and (tmp_path / segment.path).exists()
    con.close()
    store.close()  # a crash or a stop before the record
    assert _events(tmp_path) == 1
    assert not (tmp_path / segment.path).exists()


def test_no_connection_of_the_store_draws_progress_bars_into_the_servers_output(tmp_path: Path) -> None:
    # DuckDB prints a bar on stdout for a query over 2 s when enabled. Its default depends on the
    # process (it is off under pytest's capture), so the store is opened as the server opens it.
    script = (
        "import sys; from pathlib import Path; from milepost.engines.duckdb import DuckDBStore\n"
        "store = DuckDBStore(Path(sys.argv[1]))\n"
        "for con in (store._con, store.reader(), store.connect()):\n"
        "    print(con.execute(\"SELECT current_setting('enable_progress_bar')\").fetchall()[0][0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False", "False"]
