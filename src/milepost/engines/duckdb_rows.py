"""Arrow tables built from a commit plan: one columnar append per table per commit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from milepost.ingest.plan import UserChange
from milepost.model.batch import ConsentRow, DeviceReport, EventRow

AMOUNT = pa.decimal128(38, 9)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=_default).decode()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def event_table(rows: list[Any], first_id: int) -> pa.Table:
    """Rows are (mpid, input_id, received_at, EventRow[, environment, historical])."""
    evs: list[EventRow] = [r[3] for r in rows]
    cols: dict[str, Any] = {
        "event_id": pa.array(range(first_id, first_id + len(rows)), pa.int64()),
        "mpid": pa.array([r[0] for r in rows], pa.int64()),
        "input_id": pa.array([r[1] for r in rows], pa.int32()),
        "event_type": [e.event_type for e in evs],
        "name": [e.name for e in evs],
        "name_lc": [e.name.lower() if e.name is not None else None for e in evs],
        "custom_event_type": [e.custom_event_type for e in evs],
        "action": [e.action for e in evs],
        "is_install": pa.array([e.is_install for e in evs], pa.bool_()),
        "is_upgrade": pa.array([e.is_upgrade for e in evs], pa.bool_()),
        "ts": pa.array([e.ts for e in evs], pa.int64()),
        "received_at": pa.array([r[2] for r in rows], pa.int64()),
        "total_amount": pa.array([e.total_amount for e in evs], AMOUNT),
        "transaction_id": pa.array([e.transaction_id for e in evs], pa.string()),
        "currency_code": pa.array([e.currency_code for e in evs], pa.string()),
        "coupon_code": pa.array([e.coupon_code for e in evs], pa.string()),
        "attrs": [_json(e.attrs) for e in evs],
        "products": [_json(e.products) for e in evs],
        "source_message_id": pa.array([e.source_message_id for e in evs], pa.string()),
        "data": [_json(e.data) for e in evs],
    }
    if rows and len(rows[0]) > 4:
        cols["environment"] = [r[4] for r in rows]
        cols["historical"] = pa.array([r[5] for r in rows], pa.bool_())
    return pa.table(cols)


def batch_table(
    rows: list[tuple[int, str, str, int, int, str | None, dict[str, Any]]], first_seq: int
) -> pa.Table:
    return pa.table(
        {
            "seq": pa.array(range(first_seq, first_seq + len(rows)), pa.int64()),
            "input_id": pa.array([r[0] for r in rows], pa.int32()),
            "endpoint": [r[1] for r in rows],
            "environment": [r[2] for r in rows],
            "mpid": pa.array([r[3] for r in rows], pa.int64()),
            "received_at": pa.array([r[4] for r in rows], pa.int64()),
            "request_id": pa.array([r[5] for r in rows], pa.string()),
            "body": [_json(r[6]) for r in rows],
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
            # The merge patch as is (null = delete); the store strips nulls from rows it has just created.
            "attributes": [_json(c.attributes_patch) for _, c in items],
            "updated_at": pa.array([c.last_seen or c.created_at for _, c in items], pa.int64()),
        }
    )


def identity_table(ids: dict[tuple[str, str], tuple[int, str, bool, int]]) -> pa.Table:
    items = list(ids.items())
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
            "device_ids": [_json(v[0].device_ids) for _, v in items],
            "updated_at": pa.array([v[1] for _, v in items], pa.int64()),
        }
    )


def key_table(keys: dict[tuple[int, str], int]) -> pa.Table:
    items = list(keys.items())
    return pa.table(
        {
            "input_id": pa.array([k[0] for k, _ in items], pa.int32()),
            "key": [k[1] for k, _ in items],
            "received_at": pa.array([v for _, v in items], pa.int64()),
        }
    )
