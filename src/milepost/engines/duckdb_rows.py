"""Arrow tables built from a commit plan: one columnar append per table per commit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from milepost.ingest.plan import UserChange
from milepost.model.batch import ConsentRow, DeviceReport, EventRow

AMOUNT = pa.decimal128(38, 9)
# Compact orjson output never holds a raw newline (strings escape it), so a fragment of one marks
# the places between values.
_SEPARATOR = orjson.Fragment(b"\n")
LARGE_JSON = pa.json_(pa.large_string())


def _json_column(values: list[Any]) -> pa.Array:
    """A JSON column of the values, each serialised by `orjson.dumps(value, default=_default)`.

    A call of orjson costs about as much as serialising a small event's data, so the values go out
    as one array `[v0,\n,v1,\n,...]`, and Arrow's split of that text at the separators gives the
    column: the values back to back and their offsets, in one pass of native code. orjson writes
    valid UTF-8 JSON, so nothing is validated again, and the column carries Arrow's JSON type, which
    DuckDB takes as its own JSON type without parsing every value again to check it.
    """
    n = len(values)
    if n == 0:
        return pa.ExtensionArray.from_storage(LARGE_JSON, pa.array([], pa.large_string()))
    seq: list[Any] = [_SEPARATOR] * (2 * n - 1)
    seq[::2] = values
    text = orjson.dumps(seq, default=_default)
    # The text between the brackets as one string, without a copy.
    whole = pa.Array.from_buffers(
        pa.large_string(), 1, [None, pa.py_buffer(np.array([1, len(text) - 1], np.int64)), pa.py_buffer(text)]
    )
    # A separator can only be where a fragment went: orjson escapes a newline inside a string.
    parts = pc.split_pattern(whole, pattern=",\n,").values
    if len(parts) != n:
        raise ValueError(f"{len(parts)} JSON values for {n}")
    return pa.ExtensionArray.from_storage(LARGE_JSON, parts)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


_NO_EVENT_COLUMNS: tuple[tuple[Any, ...], ...] = ((),) * len(EventRow._fields)


def event_table(chunks: list[Any], first_id: int) -> pa.Table:
    """Chunks are (mpid, input_id, received_at, [EventRow, ...][, environment, historical]), one per batch."""
    evs: list[EventRow] = []
    mpids: list[int] = []
    inputs: list[int] = []
    received: list[int] = []
    for c in chunks:
        rows = c[3]
        evs += rows
        n = len(rows)
        mpids += [c[0]] * n
        inputs += [c[1]] * n
        received += [c[2]] * n
    # the events' columns by EventRow's field names (the store's column names)
    col = dict(zip(EventRow._fields, zip(*evs, strict=True) if evs else _NO_EVENT_COLUMNS, strict=True))
    n = len(evs)
    texts = _json_column(
        [*col["attrs"], *col["products"], *col["data"]]
    )  # empty attrs and products write {} and []
    cols: dict[str, Any] = {
        "event_id": pa.array(range(first_id, first_id + len(evs)), pa.int64()),
        "mpid": pa.array(mpids, pa.int64()),
        "input_id": pa.array(inputs, pa.int32()),
        "event_type": pa.array(col["event_type"], pa.string()),
        "name": pa.array(col["name"], pa.string()),
        "name_lc": pa.array([n.lower() if n is not None else None for n in col["name"]], pa.string()),
        "custom_event_type": pa.array(col["custom_event_type"], pa.string()),
        "action": pa.array(col["action"], pa.string()),
        "is_install": pa.array(col["is_install"], pa.bool_()),
        "is_upgrade": pa.array(col["is_upgrade"], pa.bool_()),
        "ts": pa.array(col["ts"], pa.int64()),
        "received_at": pa.array(received, pa.int64()),
        "total_amount": pa.array(col["total_amount"], AMOUNT),
        "transaction_id": pa.array(col["transaction_id"], pa.string()),
        "currency_code": pa.array(col["currency_code"], pa.string()),
        "coupon_code": pa.array(col["coupon_code"], pa.string()),
        "attrs": texts[:n],
        "products": texts[n : 2 * n],
        "source_message_id": pa.array(col["source_message_id"], pa.string()),
        "data": texts[2 * n :],
    }
    if chunks and len(chunks[0]) > 4:
        environment: list[str] = []
        historical: list[bool] = []
        for c in chunks:
            n = len(c[3])
            environment += [c[4]] * n
            historical += [c[5]] * n
        cols["environment"] = pa.array(environment, pa.string())
        cols["historical"] = pa.array(historical, pa.bool_())
    return pa.table(cols)


def batch_table(
    rows: list[tuple[int, str, str, int, int, str | None, dict[str, Any]]], first_seq: int
) -> pa.Table:
    input_id, endpoint, environment, mpid, received_at, request_id, body = zip(*rows, strict=True)
    # A batch's events are stored as event rows; its body keeps the rest (format 4).
    bodies = [{k: v for k, v in b.items() if k != "events"} if "events" in b else b for b in body]
    return pa.table(
        {
            "seq": pa.array(range(first_seq, first_seq + len(rows)), pa.int64()),
            "input_id": pa.array(input_id, pa.int32()),
            "endpoint": pa.array(endpoint, pa.string()),
            "environment": pa.array(environment, pa.string()),
            "mpid": pa.array(mpid, pa.int64()),
            "received_at": pa.array(received_at, pa.int64()),
            "request_id": pa.array(request_id, pa.string()),
            "body": _json_column(bodies),
        }
    )


def user_table(users: dict[int, UserChange]) -> pa.Table:
    items = list(users.items())
    return pa.table(
        {
            "mpid": pa.array([m for m, _ in items], pa.int64()),
            "created_at": pa.array([c.created_at for _, c in items], pa.int64()),
            "first_seen": pa.array([c.first_seen for _, c in items], pa.int64()),
            "last_seen": pa.array([c.last_seen for _, c in items], pa.int64()),
            "inputs": pa.array([sorted(c.inputs) for _, c in items], pa.list_(pa.int32())),
            # The merge patch (null = delete) for a stored row; a new row takes only what is set.
            "attributes": _json_column(
                [_new_row(c.attributes_patch) if c.is_new else c.attributes_patch for _, c in items]
            ),
            "updated_at": pa.array([c.last_seen or c.created_at for _, c in items], pa.int64()),
        }
    )


def _new_row(patch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in patch.items() if v is not None}


def identity_table(
    ids: dict[tuple[str, str], tuple[int, str, bool, int]], *, skip: set[tuple[str, str]]
) -> pa.Table:
    """Rows of `ids` except those in `skip` (stored already as they are)."""
    items = [(k, v) for k, v in ids.items() if k not in skip] if skip else list(ids.items())
    return pa.table(
        {
            "identity_type": [k[0] for k, _ in items],
            "value_key": [k[1] for k, _ in items],
            "mpid": pa.array([v[0] for _, v in items], pa.int64()),
            "value": [v[1] for _, v in items],
            "is_device": pa.array([v[2] for _, v in items], pa.bool_()),
            "updated_at": pa.array([v[3] for _, v in items], pa.int64()),
        }
    )


def consent_table(consents: dict[tuple[int, str, str], tuple[ConsentRow, int, int]]) -> pa.Table:
    items = list(consents.items())
    return pa.table(
        {
            "mpid": pa.array([k[0] for k, _ in items], pa.int64()),
            "regulation": [k[1] for k, _ in items],
            "purpose": [k[2] for k, _ in items],
            "consented": pa.array([v[0].consented for _, v in items], pa.bool_()),
            "ts": pa.array([v[1] for _, v in items], pa.int64()),
            "received_at": pa.array([v[2] for _, v in items], pa.int64()),
            "document": pa.array([v[0].document for _, v in items], pa.string()),
            "location": pa.array([v[0].location for _, v in items], pa.string()),
            "hardware_id": pa.array([v[0].hardware_id for _, v in items], pa.string()),
        }
    )


def device_table(devices: dict[tuple[int, str], tuple[DeviceReport, int]]) -> pa.Table:
    items = list(devices.items())

    def field(name: str) -> pa.Array:
        return pa.array([v[0].fields.get(name) for _, v in items], pa.string())

    return pa.table(
        {
            "mpid": pa.array([k[0] for k, _ in items], pa.int64()),
            "device_key": [k[1] for k, _ in items],
            "platform": field("platform"),
            "os_version": field("os_version"),
            "device_model": field("device_model"),
            "device_manufacturer": field("device_manufacturer"),
            "network_carrier": field("network_carrier"),
            "app_version": field("app_version"),
            "device_ids": _json_column([v[0].device_ids for _, v in items]),
            "updated_at": pa.array([v[1] for _, v in items], pa.int64()),
        }
    )
