"""Checks that a generated batch is a valid Events API batch (SPEC §3)."""

from __future__ import annotations

from typing import Any

from milepost.synthetic.behaviour import CUSTOM_EVENT_TYPES, EVENT_TYPES, PRODUCT_ACTIONS
from milepost.synthetic.population import EPOCH_2000_MS

IDENTITY_TYPES: frozenset[str] = frozenset({"customer_id", "email", "mobile_number", "other"})
MAX_NAME = 256
MAX_VALUE = 4096
MAX_ATTRIBUTES = 100
_I64 = 1 << 63


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _attr_problems(where: str, attrs: object, allow_lists: bool) -> list[str]:
    if not isinstance(attrs, dict):
        return [f"{where}: not an object"]
    out = []
    if len(attrs) > MAX_ATTRIBUTES:
        out.append(f"{where}: more than {MAX_ATTRIBUTES} attributes")
    for k, v in attrs.items():
        if not isinstance(k, str) or not 0 < len(k) <= MAX_NAME:
            out.append(f"{where}: bad name {k!r}")
        if isinstance(v, list) and allow_lists:
            if not all(isinstance(x, str) and len(x) <= MAX_VALUE for x in v):
                out.append(f"{where}.{k}: list items must be short strings")
        elif not _scalar(v) or (isinstance(v, str) and len(v) > MAX_VALUE):
            out.append(f"{where}.{k}: bad value {v!r}")
    return out


def _two_places(x: object) -> bool:
    return (
        isinstance(x, int | float) and not isinstance(x, bool) and abs(round(float(x), 2) - float(x)) < 1e-9
    )


def _event_problems(where: str, event: Any, end_ms: int | None) -> list[str]:
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return [f"{where}: needs event_type and data"]
    etype, data = event.get("event_type"), event["data"]
    out = []
    if etype not in EVENT_TYPES:
        out.append(f"{where}: event_type {etype!r} not allowed")
    ts = data.get("timestamp_unixtime_ms")
    if not isinstance(ts, int) or ts < EPOCH_2000_MS or (end_ms is not None and ts > end_ms):
        out.append(f"{where}: timestamp {ts!r} out of range")
    if not isinstance(data.get("source_message_id"), str) or not data["source_message_id"]:
        out.append(f"{where}: missing source_message_id")
    if "custom_attributes" in data:
        out += _attr_problems(f"{where}.custom_attributes", data["custom_attributes"], allow_lists=False)
    if etype == "custom_event":
        name = data.get("event_name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            out.append(f"{where}: bad event_name {name!r}")
        if data.get("custom_event_type") not in CUSTOM_EVENT_TYPES:
            out.append(f"{where}: bad custom_event_type {data.get('custom_event_type')!r}")
    elif etype == "screen_view":
        name = data.get("screen_name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            out.append(f"{where}: bad screen_name {name!r}")
    elif etype == "commerce_event":
        pa = data.get("product_action")
        if not isinstance(pa, dict) or pa.get("action") not in PRODUCT_ACTIONS:
            out.append(f"{where}: bad product_action")
        else:
            if not _two_places(pa.get("total_amount")):
                out.append(f"{where}: bad total_amount {pa.get('total_amount')!r}")
            products = pa.get("products")
            if not isinstance(products, list) or not products:
                out.append(f"{where}: no products")
            else:
                for p in products:
                    if not {"id", "name", "category", "brand", "price", "quantity"} <= set(p):
                        out.append(f"{where}: product missing fields")
                    elif (
                        not _two_places(p["price"]) or not isinstance(p["quantity"], int) or p["quantity"] < 1
                    ):
                        out.append(f"{where}: bad product price or quantity")
            if pa["action"] == "purchase" and not isinstance(pa.get("transaction_id"), str):
                out.append(f"{where}: purchase without transaction_id")
    elif etype == "application_state_transition":
        if data.get("application_transition_type") != "application_initialized":
            out.append(f"{where}: bad application_transition_type")
        if not isinstance(data.get("is_first_run"), bool) or not isinstance(data.get("is_upgrade"), bool):
            out.append(f"{where}: is_first_run and is_upgrade must be booleans")
    return out


def _consent_problems(consent: Any) -> list[str]:
    if not isinstance(consent, dict) or not set(consent) <= {"gdpr", "ccpa"}:
        return ["consent_state: bad shape"]
    out = []
    purposes = dict(consent.get("gdpr", {}))
    if "ccpa" in consent:
        if set(consent["ccpa"]) != {"data_sale_opt_out"}:
            out.append("consent_state.ccpa: only data_sale_opt_out")
        purposes["ccpa"] = consent["ccpa"].get("data_sale_opt_out")
    for purpose, state in purposes.items():
        if not isinstance(state, dict) or not isinstance(state.get("consented"), bool):
            out.append(f"consent_state.{purpose}: needs consented")
        elif (
            not isinstance(state.get("timestamp_unixtime_ms"), int)
            or state["timestamp_unixtime_ms"] < EPOCH_2000_MS
        ):
            out.append(f"consent_state.{purpose}: bad timestamp")
    return out


def batch_problems(batch: Any, *, end_ms: int | None = None) -> list[str]:
    """Everything wrong with a batch; an empty list means it is valid."""
    if not isinstance(batch, dict):
        return ["batch is not an object"]
    out = []
    if batch.get("environment", "production") not in ("production", "development"):
        out.append("bad environment")
    mpid = batch.get("mpid")
    if not isinstance(mpid, int) or isinstance(mpid, bool) or mpid == 0 or not -_I64 <= mpid < _I64:
        out.append(f"bad mpid {mpid!r}")
    if not isinstance(batch.get("source_request_id"), str) or not batch["source_request_id"]:
        out.append("missing source_request_id")
    ids = batch.get("user_identities")
    if ids is not None:
        if not isinstance(ids, dict) or not set(ids) <= IDENTITY_TYPES:
            out.append(f"bad user_identities {ids!r}")
        elif not all(isinstance(v, str) and v.strip() for v in ids.values()):
            out.append("identity values must be non-empty strings")
    if "user_attributes" in batch:
        out += _attr_problems("user_attributes", batch["user_attributes"], allow_lists=True)
    if "consent_state" in batch:
        out += _consent_problems(batch["consent_state"])
    device = batch.get("device_info")
    if device is not None and (
        not isinstance(device, dict) or device.get("platform") not in ("iOS", "Android", "web")
    ):
        out.append("bad device_info")
    events = batch.get("events")
    if not isinstance(events, list):
        return [*out, "events must be a list"]
    for n, event in enumerate(events):
        out += _event_problems(f"events[{n}]", event, end_ms)
    return out
