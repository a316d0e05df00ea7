"""Stores of earlier formats open in the current one with their de-duplication keys and events intact."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import orjson

from milepost.engines import duckdb_schema
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest

DAY = 86_400_000
T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=2 * DAY, message_ms=1 * DAY)


def _format_1_store(directory: Path) -> None:
    directory.mkdir(parents=True)
    con = duckdb.connect(str(directory / "store.duckdb"))
    con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT INTO store_meta VALUES ('schema_version', '1')")
    con.execute(f"CREATE TABLE events_hot ({duckdb_schema.EVENT_COLUMNS})")
    con.execute("CREATE VIEW events AS SELECT * FROM events_hot")
    con.execute(
        "CREATE TABLE request_keys (input_id INTEGER NOT NULL, request_id VARCHAR NOT NULL, "
        "received_at BIGINT NOT NULL, PRIMARY KEY (input_id, request_id))"
    )
    con.execute(
        "CREATE TABLE message_keys (input_id INTEGER NOT NULL, message_id VARCHAR NOT NULL, "
        "received_at BIGINT NOT NULL, PRIMARY KEY (input_id, message_id))"
    )
    con.execute(f"INSERT INTO request_keys VALUES (1, 'r1', {T0}), (2, 'r1', {T0 + 1})")
    con.execute(f"INSERT INTO message_keys VALUES (1, 'm1', {T0 + 2})")
    con.close()


def _ingest(store: DuckDBStore, at: int, body: list[dict[str, object]]) -> tuple[int, int]:
    batches, _ = normalize_request(body, bulk=True, historical=False, received_at=at)
    plan = build_plan([IngestRequest(1, at, batches)], store, WINDOWS, random.Random(1))
    store.apply(plan)
    return plan.outcomes[0].stored_batches, plan.outcomes[0].stored_events


def test_format_1_store_opens_with_its_keys(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    _format_1_store(directory)
    store = DuckDBStore(directory)
    try:
        con = store._con
        assert _format(con) == duckdb_schema.SCHEMA_VERSION
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "dedupe_keys" in tables and not tables & {"request_keys", "message_keys"}
        state = store._state()
        assert state.request_keys == {(1, "r1"): T0, (2, "r1"): T0 + 1}
        assert state.message_keys == {(1, "m1"): T0 + 2}
        # The moved keys still deduplicate: the request again is a duplicate, a new message is not.
        event = {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
        assert _ingest(store, T0 + 10, [{"mpid": 3, "source_request_id": "r1", "events": [event]}]) == (0, 0)
        dup = {**event, "data": {**event["data"], "source_message_id": "m1"}}
        new = {**event, "data": {**event["data"], "source_message_id": "m2"}}
        assert _ingest(store, T0 + 11, [{"mpid": 3, "events": [dup, new]}]) == (1, 1)
    finally:
        store.close()
    # Opened again, the store is in the current format already and keeps what it holds.
    store = DuckDBStore(directory)
    try:
        assert store._state().message_keys == {(1, "m1"): T0 + 2, (1, "m2"): T0 + 11}
        assert store._state().request_keys == {(1, "r1"): T0, (2, "r1"): T0 + 1}
    finally:
        store.close()


def _store_of_format(directory: Path, version: int) -> DuckDBStore:
    """A new store in the layout of an older format: its tables are the current ones, except that
    up to format 4 real-time events not sealed were in `events_hot`, and `events` was a view over
    that table and the segments; sealed events were only in their segments."""
    store = DuckDBStore(directory)
    store._con.execute(f"UPDATE store_meta SET value = '{version}' WHERE key = 'schema_version'").fetchall()
    _to_format_4_events(store)
    return store


def _to_format_4_events(store: DuckDBStore) -> None:
    con = store._con
    con.execute(f"DELETE FROM events WHERE event_id <= ({duckdb_schema.sealed_through()})").fetchall()
    con.execute("ALTER TABLE events RENAME TO events_hot").fetchall()
    con.execute("CREATE VIEW events AS SELECT * FROM events_hot").fetchall()


def _format(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()[0][0])


def test_format_2_keys_count_until_purged(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = _store_of_format(directory, 2)
    store._con.execute(
        f"INSERT INTO dedupe_keys VALUES (0, 1, 'r1', {T0}), (1, 1, 'm1', {T0 + 2}), (1, 1, 'm0', {T0 - DAY})"
    ).fetchall()
    store.close()
    store = DuckDBStore(directory)
    try:
        assert _format(store._con) == duckdb_schema.SCHEMA_VERSION
        assert store._state().request_keys == {(1, "r1"): T0}
        assert store._state().message_keys == {(1, "m1"): T0 + 2, (1, "m0"): T0 - DAY}
        event = {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
        dup = {**event, "data": {**event["data"], "source_message_id": "m1"}}
        assert _ingest(store, T0 + 10, [{"mpid": 3, "source_request_id": "r1", "events": [dup]}]) == (0, 0)
        assert _ingest(store, T0 + 11, [{"mpid": 3, "events": [dup]}]) == (1, 0)
        store.purge_dedupe_keys(T0 - 1, T0 - 1)
        rows = store._con.execute("SELECT key FROM dedupe_keys ORDER BY key").fetchall()
        assert rows == [("m1",), ("r1",)]
    finally:
        store.close()
    store = DuckDBStore(directory)
    try:
        assert store._state().request_keys == {(1, "r1"): T0}
        assert store._state().message_keys == {(1, "m1"): T0 + 2}
    finally:
        store.close()


def test_purged_keys_stay_forgotten_after_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = DuckDBStore(directory)
    try:
        event = {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
        old = {**event, "data": {**event["data"], "source_message_id": "m-old"}}
        new = {**event, "data": {**event["data"], "source_message_id": "m-new"}}
        dev = {"mpid": 4, "environment": "development", "source_request_id": "r-dev"}
        assert _ingest(store, T0, [{"mpid": 3, "source_request_id": "r-old", "events": [old]}]) == (1, 1)
        assert _ingest(store, T0 + DAY, [{**dev, "events": [new]}]) == (1, 1)
        store.purge_dedupe_keys(T0, T0)
        # An earlier horizon later on does not bring the forgotten keys back.
        store.purge_dedupe_keys(T0 - DAY, T0 - DAY)
        assert store._state().request_keys == {(1, "r-dev"): T0 + DAY}
        assert store._state().message_keys == {(1, "m-new"): T0 + DAY}
    finally:
        store.close()
    store = DuckDBStore(directory)
    try:
        assert store._state().request_keys == {(1, "r-dev"): T0 + DAY}
        assert store._state().message_keys == {(1, "m-new"): T0 + DAY}
        # The forgotten keys are new again; the kept ones are still duplicates.
        body = [{"mpid": 3, "source_request_id": "r-old", "events": [old, new]}]
        assert _ingest(store, T0 + DAY + 1, body) == (1, 1)
        # The records themselves stay.
        assert store.stats()["batches"] == 3
    finally:
        store.close()


def test_a_key_sent_again_after_its_window_counts_from_the_later_time(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store")
    try:
        body = [{"mpid": 3, "source_request_id": "r", "events": []}]
        assert _ingest(store, T0, body) == (1, 0)
        later = T0 + WINDOWS.request_ms + 1
        assert _ingest(store, later, body) == (1, 0)
        store._mirror = None  # what a restart reads: the later receipt, not the first
        assert store._state().request_keys == {(1, "r"): later}
        assert _ingest(store, later + 1, body) == (0, 0)
        store.purge_dedupe_keys(T0, T0)
        store._mirror = None  # after the purge a restart still reads the later receipt
        assert store._state().request_keys == {(1, "r"): later}
        assert _ingest(store, later + 2, body) == (0, 0)
    finally:
        store.close()


def test_format_3_store_opens_with_its_bodies_and_writes_bodies_without_events(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    event = {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
    store = _store_of_format(directory, 3)
    old_body = {"mpid": 3, "source_request_id": "r1", "events": [event]}
    store._con.execute(
        "INSERT INTO batches VALUES (1, 1, 'events', 'production', 3, ?, 'r1', ?)",
        [T0, orjson.dumps(old_body).decode()],
    ).fetchall()
    store.close()
    store = DuckDBStore(directory)
    try:
        assert _format(store._con) == duckdb_schema.SCHEMA_VERSION
        assert store._state().request_keys == {(1, "r1"): T0}
        assert _ingest(store, T0 + 10, [{"mpid": 3, "source_request_id": "r2", "events": [event]}]) == (1, 1)
        rows = store._con.execute("SELECT seq, body::VARCHAR FROM batches ORDER BY seq").fetchall()
        assert [(seq, orjson.loads(b)) for seq, b in rows] == [
            (1, old_body),
            (2, {"mpid": 3, "source_request_id": "r2"}),
        ]
    finally:
        store.close()


def test_format_4_store_keeps_its_sealed_events_in_the_events_table(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = DuckDBStore(directory)
    event = {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}
    for mpid in (3, 4, 5):
        assert _ingest(store, T0 + mpid, [{"mpid": mpid, "events": [event, event]}]) == (1, 2)
    assert store.seal(min_rows=1) == 6
    assert _ingest(store, T0 + 10, [{"mpid": 6, "events": [event]}]) == (1, 1)
    store._con.execute("UPDATE store_meta SET value = '4' WHERE key = 'schema_version'").fetchall()
    _to_format_4_events(store)  # the sealed six were only in the segment
    assert store._con.execute("SELECT count(*) FROM events_hot").fetchall() == [(1,)]
    store.close()
    store = DuckDBStore(directory)
    try:
        assert _format(store._con) == duckdb_schema.SCHEMA_VERSION
        rows = store._con.execute("SELECT event_id, mpid FROM events ORDER BY event_id").fetchall()
        assert rows == [(1, 3), (2, 3), (3, 4), (4, 4), (5, 5), (6, 5), (7, 6)]
        tables = {r[0] for r in store._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "events" in tables and "events_hot" not in tables
        assert _ingest(store, T0 + 20, [{"mpid": 7, "events": [event]}]) == (1, 1)
        assert store._con.execute("SELECT max(event_id) FROM events").fetchall() == [(8,)]
        # The next segment starts after the recorded one.
        assert store.seal(min_rows=1) == 2
    finally:
        store.close()
