"""DDL of the embedded store; the columns are documented in docs/store-layout.md."""

from __future__ import annotations

SCHEMA_VERSION = 1

EVENT_COLUMNS = """
    event_id BIGINT NOT NULL,
    mpid BIGINT NOT NULL,
    input_id INTEGER NOT NULL,
    event_type VARCHAR NOT NULL,
    name VARCHAR,
    name_lc VARCHAR,
    custom_event_type VARCHAR,
    action VARCHAR,
    is_install BOOLEAN NOT NULL,
    is_upgrade BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    total_amount DECIMAL(38, 9),
    transaction_id VARCHAR,
    currency_code VARCHAR,
    coupon_code VARCHAR,
    attrs JSON NOT NULL,
    products JSON NOT NULL,
    source_message_id VARCHAR,
    data JSON NOT NULL
"""

DDL = [
    "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS events_hot ({EVENT_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS events_other ({EVENT_COLUMNS}, environment VARCHAR NOT NULL, historical BOOLEAN NOT NULL)",
    """CREATE TABLE IF NOT EXISTS users (
        mpid BIGINT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        first_seen BIGINT,
        last_seen BIGINT,
        inputs INTEGER[] NOT NULL,
        attributes JSON NOT NULL,
        updated_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS identities (
        identity_type VARCHAR NOT NULL,
        value_key VARCHAR NOT NULL,
        mpid BIGINT NOT NULL,
        value VARCHAR NOT NULL,
        is_device BOOLEAN NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (identity_type, value_key))""",
    """CREATE TABLE IF NOT EXISTS consents (
        mpid BIGINT NOT NULL,
        regulation VARCHAR NOT NULL,
        purpose VARCHAR NOT NULL,
        consented BOOLEAN NOT NULL,
        ts BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        document VARCHAR,
        location VARCHAR,
        hardware_id VARCHAR,
        PRIMARY KEY (mpid, regulation, purpose))""",
    """CREATE TABLE IF NOT EXISTS devices (
        mpid BIGINT NOT NULL,
        device_key VARCHAR NOT NULL,
        platform VARCHAR,
        os_version VARCHAR,
        device_model VARCHAR,
        device_manufacturer VARCHAR,
        network_carrier VARCHAR,
        app_version VARCHAR,
        device_ids JSON NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (mpid, device_key))""",
    """CREATE TABLE IF NOT EXISTS batches (
        seq BIGINT NOT NULL,
        input_id INTEGER NOT NULL,
        endpoint VARCHAR NOT NULL,
        environment VARCHAR NOT NULL,
        mpid BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        request_id VARCHAR,
        body JSON NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS request_keys (
        input_id INTEGER NOT NULL, request_id VARCHAR NOT NULL, received_at BIGINT NOT NULL,
        PRIMARY KEY (input_id, request_id))""",
    """CREATE TABLE IF NOT EXISTS message_keys (
        input_id INTEGER NOT NULL, message_id VARCHAR NOT NULL, received_at BIGINT NOT NULL,
        PRIMARY KEY (input_id, message_id))""",
    """CREATE TABLE IF NOT EXISTS segments (
        seq BIGINT PRIMARY KEY, path VARCHAR NOT NULL, min_event_id BIGINT NOT NULL,
        max_event_id BIGINT NOT NULL, rows BIGINT NOT NULL)""",
]
