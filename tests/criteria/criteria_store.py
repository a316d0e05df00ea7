"""Load reference `UserData` into an in-memory DuckDB with the store layout, and run compiled criteria."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import duckdb

from milepost.criteria.reference import UserData

SCHEMA = """
CREATE TABLE users (
    mpid BIGINT PRIMARY KEY, created_at BIGINT, first_seen BIGINT, last_seen BIGINT,
    inputs INTEGER[], attributes JSON, updated_at BIGINT);
CREATE TABLE identities (
    identity_type VARCHAR, value_key VARCHAR, mpid BIGINT, value VARCHAR, is_device BOOLEAN,
    updated_at BIGINT, PRIMARY KEY (identity_type, value_key));
CREATE TABLE consents (
    mpid BIGINT, regulation VARCHAR, purpose VARCHAR, consented BOOLEAN, ts BIGINT, received_at BIGINT,
    document VARCHAR, location VARCHAR, hardware_id VARCHAR, PRIMARY KEY (mpid, regulation, purpose));
CREATE TABLE devices (
    mpid BIGINT, device_key VARCHAR, platform VARCHAR, os_version VARCHAR, device_model VARCHAR,
    device_manufacturer VARCHAR, network_carrier VARCHAR, app_version VARCHAR, device_ids JSON,
    updated_at BIGINT, PRIMARY KEY (mpid, device_key));
CREATE TABLE events (
    event_id BIGINT, mpid BIGINT, input_id INTEGER, event_type VARCHAR, name VARCHAR, name_lc VARCHAR,
    custom_event_type VARCHAR, action VARCHAR, is_install BOOLEAN, is_upgrade BOOLEAN, ts BIGINT,
    received_at BIGINT, total_amount DECIMAL(38,9), transaction_id VARCHAR, currency_code VARCHAR,
    coupon_code VARCHAR, attrs JSON, products JSON, source_message_id VARCHAR, data JSON);
CREATE TABLE memberships (audience_id BIGINT, mpid BIGINT, entered_at BIGINT);
"""

DEVICE_FIELDS = (
    "platform",
    "os_version",
    "device_model",
    "device_manufacturer",
    "network_carrier",
    "app_version",
)
EVENT_COLUMNS = (
    "event_id", "mpid", "input_id", "event_type", "name", "name_lc", "custom_event_type", "action",
    "is_install", "is_upgrade", "ts", "received_at", "total_amount", "transaction_id", "currency_code",
    "coupon_code", "attrs", "products", "source_message_id", "data",
)  # fmt: skip


def load(
    users: Sequence[UserData], memberships: Iterable[tuple[int, int, int]] = ()
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory store holding these users; memberships are (audience_id, mpid, entered_at)."""
    con = duckdb.connect(":memory:")
    con.execute(SCHEMA)
    for u in users:
        con.execute(
            "INSERT INTO users VALUES (?, 0, ?, ?, [1], ?, 0)",
            [u.mpid, u.first_seen, u.last_seen, json.dumps(dict(u.attributes))],
        )
        for kind, value in u.identities.items():
            con.execute(
                "INSERT INTO identities VALUES (?, ?, ?, ?, false, 0)",
                [kind, f"{u.mpid}:{value}", u.mpid, value],
            )
        for kind, values in u.device_ids.items():
            for value in values:
                con.execute(
                    "INSERT INTO identities VALUES (?, ?, ?, ?, true, 0)",
                    [kind, f"{u.mpid}:{value}", u.mpid, value],
                )
        for (regulation, purpose), c in u.consents.items():
            con.execute(
                "INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                [u.mpid, regulation, purpose, c.consented, c.ts, c.received_at],
            )
        for i, dev in enumerate(u.devices):
            con.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', 0)",
                [u.mpid, f"k{i}", *(dev.get(f) for f in DEVICE_FIELDS)],
            )
        for e in u.events:
            row = []
            for column in EVENT_COLUMNS:
                v = e.get(column)
                if column in ("attrs", "products", "data"):
                    v = json.dumps(v if v is not None else ({} if column != "products" else []))
                elif column == "total_amount" and v is not None:
                    v = str(v)
                row.append(v)
            con.execute(f"INSERT INTO events VALUES ({', '.join('?' * len(row))})", row)
    for audience_id, mpid, entered_at in memberships:
        con.execute("INSERT INTO memberships VALUES (?, ?, ?)", [audience_id, mpid, entered_at])
    return con
