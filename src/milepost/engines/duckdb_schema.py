"""DDL of the embedded store; the columns are documented in docs/store-layout.md."""

from __future__ import annotations

SCHEMA_VERSION = 5

# De-duplication keys are read where the accepted data already holds them: a request's key is its
# batch's `batches.request_id`, a message's key its event's `source_message_id` (only kept events
# have one stored, and each stored key has its row). A separate key table cost a statement per
# commit. Format 2 kept them in `dedupe_keys`; that table stays, unwritten, until the purge has
# dropped its rows. `kind` tells the key of a whole request from the key of one event.
REQUEST_KEY = 0
MESSAGE_KEY = 1
# Up to where (`received_at`) the purge has dropped keys, in `store_meta`: older rows of `batches`
# and the event tables are kept as records but no longer count as keys.
REQUEST_KEYS_BEFORE = "request_keys_before"
MESSAGE_KEYS_BEFORE = "message_keys_before"

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
    f"CREATE TABLE IF NOT EXISTS events ({EVENT_COLUMNS})",
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
    """CREATE TABLE IF NOT EXISTS dedupe_keys (
        kind TINYINT NOT NULL, input_id INTEGER NOT NULL, key VARCHAR NOT NULL, received_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS segments (
        seq BIGINT PRIMARY KEY, path VARCHAR NOT NULL, min_event_id BIGINT NOT NULL,
        max_event_id BIGINT NOT NULL, rows BIGINT NOT NULL)""",
]

USERS_UPSERT = """INSERT INTO users SELECT * FROM t_users ON CONFLICT (mpid) DO UPDATE SET
    first_seen = coalesce(users.first_seen, excluded.first_seen),
    last_seen = greatest(users.last_seen, excluded.last_seen),
    inputs = list_sort(list_distinct(list_concat(users.inputs, excluded.inputs))),
    attributes = json_merge_patch(users.attributes, excluded.attributes),
    updated_at = excluded.updated_at"""

# The upsert's cost grows with the table when it sets the list and JSON columns of stored rows
# (measured for 100 known users: 8 ms at 10 k users, 60 ms at 2 M, 300 ms at 10 M). In a large store
# the known users' rows are updated instead, found through the primary key by a literal list of their
# MPIDs (`{mpids}`): the scalar columns of them all, then inputs and attributes only of the rows
# whose inputs gain an input or whose attributes change (at 10 M: 65 ms for the two).
USERS_UPDATE_SEEN = """UPDATE users SET
    first_seen = coalesce(users.first_seen, t.first_seen),
    last_seen = greatest(users.last_seen, t.last_seen),
    updated_at = t.updated_at
    FROM t_users t WHERE users.mpid = t.mpid AND users.mpid IN ({mpids})"""

USERS_UPDATE_LISTS = """UPDATE users SET
    inputs = list_sort(list_distinct(list_concat(users.inputs, t.inputs))),
    attributes = json_merge_patch(users.attributes, t.attributes)
    FROM t_users t WHERE users.mpid = t.mpid AND users.mpid IN ({mpids})
    AND (t.attributes <> '{{}}' OR NOT list_has_all(users.inputs, t.inputs))"""

IDENTITIES_UPSERT = """INSERT INTO identities SELECT * FROM t_identities ON CONFLICT (identity_type, value_key) DO UPDATE SET
    mpid = excluded.mpid, value = excluded.value, updated_at = excluded.updated_at"""

# The stored consent is the latest statement: highest timestamp, ties by later arrival.
CONSENTS_UPSERT = """INSERT INTO consents SELECT * FROM t_consents ON CONFLICT (mpid, regulation, purpose) DO UPDATE SET
    consented = excluded.consented, ts = excluded.ts, received_at = excluded.received_at,
    document = excluded.document, location = excluded.location, hardware_id = excluded.hardware_id
    WHERE excluded.ts > consents.ts OR (excluded.ts = consents.ts AND excluded.received_at >= consents.received_at)"""

# A report without a field keeps the device's earlier value.
DEVICES_UPSERT = """INSERT INTO devices SELECT * FROM t_devices ON CONFLICT (mpid, device_key) DO UPDATE SET
    platform = coalesce(excluded.platform, devices.platform),
    os_version = coalesce(excluded.os_version, devices.os_version),
    device_model = coalesce(excluded.device_model, devices.device_model),
    device_manufacturer = coalesce(excluded.device_manufacturer, devices.device_manufacturer),
    network_carrier = coalesce(excluded.network_carrier, devices.network_carrier),
    app_version = coalesce(excluded.app_version, devices.app_version),
    device_ids = json_merge_patch(devices.device_ids, excluded.device_ids),
    updated_at = excluded.updated_at"""

# Format 1 kept request and message keys in two tables; format 2 keeps them in `dedupe_keys`.
MIGRATE_1_TO_2 = [
    f"INSERT INTO dedupe_keys SELECT {REQUEST_KEY}, input_id, request_id, received_at FROM request_keys",
    f"INSERT INTO dedupe_keys SELECT {MESSAGE_KEY}, input_id, message_id, received_at FROM message_keys",
    "DROP TABLE request_keys",
    "DROP TABLE message_keys",
    "UPDATE store_meta SET value = '2' WHERE key = 'schema_version'",
]

# Format 3 writes no key rows (see REQUEST_KEY); the rows of format 2 stay where they are.
MIGRATE_2_TO_3 = ["UPDATE store_meta SET value = '3' WHERE key = 'schema_version'"]

# Format 4 stores a batch's body without its `events` (they are event rows already); bodies of
# earlier formats keep theirs, as nothing reads the events from a body.
MIGRATE_3_TO_4 = ["UPDATE store_meta SET value = '4' WHERE key = 'schema_version'"]


def sealed_through(segments: str = "segments") -> str:
    """The query of the last event id copied to a Parquet segment (0: none yet); `segments` names
    the table, qualified when read from another database."""
    return f"SELECT coalesce(max(max_event_id), 0) FROM {segments}"


# Format 5 keeps every real-time event in the table `events`, sealed or not (ADR 0002); format 4
# moved sealed ones out of `events_hot` into the segments, and `events` was a view over both.
# `{sealed}` is the store's relation of its recorded segments' rows.
MIGRATE_4_TO_5 = [
    "DROP VIEW events",
    "ALTER TABLE events_hot RENAME TO events",
    "INSERT INTO events SELECT * FROM {sealed} ORDER BY event_id",
    "UPDATE store_meta SET value = '5' WHERE key = 'schema_version'",
]

# The steps from each earlier format to the current one, oldest first.
MIGRATIONS = {1: MIGRATE_1_TO_2, 2: MIGRATE_2_TO_3, 3: MIGRATE_3_TO_4, 4: MIGRATE_4_TO_5}

# The keys as the writer's mirror starts from: (input_id, key, latest received_at), newer than the
# purge's horizon ($before) and any row of `dedupe_keys` the purge has left.
REQUEST_KEYS = f"""SELECT input_id, key, max(received_at) FROM (
    SELECT input_id, key, received_at FROM dedupe_keys WHERE kind = {REQUEST_KEY}
    UNION ALL SELECT input_id, request_id, received_at FROM batches
    WHERE request_id IS NOT NULL AND received_at > $before)
    GROUP BY input_id, key"""

MESSAGE_KEYS = f"""SELECT input_id, key, max(received_at) FROM (
    SELECT input_id, key, received_at FROM dedupe_keys WHERE kind = {MESSAGE_KEY}
    UNION ALL SELECT input_id, source_message_id, received_at FROM events
    WHERE source_message_id IS NOT NULL AND received_at > $before
    UNION ALL SELECT input_id, source_message_id, received_at FROM events_other
    WHERE source_message_id IS NOT NULL AND received_at > $before)
    GROUP BY input_id, key"""
