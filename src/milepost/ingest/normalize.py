"""Turn a parsed Events API body into NormalizedBatch values, or a list of errors naming batch and field."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from pydantic import ValidationError

from milepost.errors import InvalidBatch
from milepost.ingest import schema
from milepost.ingest.limits import LimitReport, clip_attributes, clip_name, clip_value
from milepost.model.batch import (
    DEVICE_FIELDS,
    DEVICE_ID_TYPES,
    USER_IDENTITY_TYPES,
    ConsentRow,
    DeviceReport,
    EventRow,
    NormalizedBatch,
)

MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
FUTURE_TOLERANCE_MS = 3_600_000
HISTORICAL_MIN_AGE_MS = 72 * 3_600_000
IDENTITY_ALIASES = {"customerid": "customer_id"}


def normalize_request(
    body: Any,
    *,
    bulk: bool,
    historical: bool,
    received_at: int,
    max_batches: int = 100,
) -> tuple[list[NormalizedBatch], list[str]]:
    """Validate a whole request; raise InvalidBatch listing every failing batch (all-or-nothing)."""
    if bulk:
        if not isinstance(body, list):
            raise InvalidBatch("the body must be a JSON array of batches")
        if not body:
            raise InvalidBatch("the body holds no batches")
        if len(body) > max_batches:
            raise InvalidBatch(f"{len(body)} batches in one request; the limit is {max_batches}")
        raw_batches = body
    else:
        if not isinstance(body, dict):
            raise InvalidBatch("the body must be a JSON object (one batch)")
        raw_batches = [body]
    errors: list[str] = []
    batches: list[NormalizedBatch] = []
    report = LimitReport()
    for i, raw in enumerate(raw_batches):
        where = f"batch[{i}]" if bulk else "batch"
        try:
            batches.append(_normalize_batch(raw, i, where, historical, received_at, report))
        except InvalidBatch as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidBatch(errors[0], errors)
    return batches, report.messages


def _normalize_batch(
    raw: Any, index: int, where: str, historical: bool, received_at: int, report: LimitReport
) -> NormalizedBatch:
    if not isinstance(raw, dict):
        raise InvalidBatch(f"{where}: must be a JSON object")
    try:
        batch = schema.Batch.model_validate(raw)
    except ValidationError as exc:
        raise InvalidBatch(exc.errors()[0]["msg"], [_format_error(where, e) for e in exc.errors()]) from None
    errors: list[str] = []
    events = [
        row
        for j, ev in enumerate(batch.events or [])
        if (row := _event_row(ev, f"{where}.events[{j}]", historical, received_at, errors, report))
        is not None
    ]
    if historical and not events and not errors:
        errors.append(f"{where}.events: a historical batch must hold at least one event")
    identities = _identities(batch, where, errors)
    if errors:
        raise InvalidBatch(errors[0], errors)
    attributes_set: dict[str, Any] = {}
    attributes_deleted = [
        clip_name(n, f"{where}.deleted_user_attributes", report) for n in batch.deleted_user_attributes or []
    ]
    for name, value in clip_attributes(
        batch.user_attributes or {}, f"{where}.user_attributes", report
    ).items():
        if value is None:
            attributes_deleted.append(name)
        else:
            attributes_set[name] = value
    return NormalizedBatch(
        index=index,
        environment=batch.environment,
        historical=historical,
        mpid=batch.mpid if isinstance(batch.mpid, int) else None,
        identities=identities,
        attributes_set=attributes_set,
        attributes_deleted=attributes_deleted,
        device=_device(batch),
        consents=_consents(batch),
        source_request_id=batch.source_request_id,
        events=events,
        body=raw,
    )


def _format_error(where: str, err: Any) -> str:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    # Discriminated unions add the tag as a path element; drop it so paths read like the JSON.
    for tag in (
        "custom_event",
        "commerce_event",
        "screen_view",
        "application_state_transition",
        *schema.GENERIC_EVENT_TYPES,
    ):
        loc = loc.replace(f".{tag}.", ".")
    return f"{where}{loc}: {err['msg']}"


def _identities(batch: schema.Batch, where: str, errors: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for raw_type, raw_value in (batch.user_identities or {}).items():
        id_type = IDENTITY_ALIASES.get(raw_type, raw_type)
        if id_type not in USER_IDENTITY_TYPES:
            errors.append(f"{where}.user_identities.{raw_type}: unknown identity type")
            continue
        if raw_value is None:
            continue
        value = str(raw_value).strip()
        if value:
            out[id_type] = (value, value.lower() if id_type == "email" else value)
    if batch.device_info is not None:
        extra = batch.device_info.model_extra or {}
        for id_type in DEVICE_ID_TYPES:
            raw_value = extra.get(id_type)
            if isinstance(raw_value, str) and raw_value.strip():
                out[id_type] = (raw_value.strip(), raw_value.strip())
    return out


def _device(batch: schema.Batch) -> DeviceReport | None:
    if batch.device_info is None:
        return None
    info = batch.device_info.model_dump(exclude_none=True)
    fields = {k: str(info[k]) for k in DEVICE_FIELDS if k in info and info[k] is not None}
    app_version = (batch.application_info or {}).get("application_version")
    if app_version is not None:
        fields["app_version"] = str(app_version)
    ids = {
        k: str(info[k]).strip() for k in DEVICE_ID_TYPES if isinstance(info.get(k), str) and info[k].strip()
    }
    return DeviceReport(fields=fields, device_ids=ids)


def _consents(batch: schema.Batch) -> list[ConsentRow]:
    state = batch.consent_state
    if state is None:
        return []
    rows: list[ConsentRow] = []
    for regulation, purposes in (("gdpr", state.gdpr), ("ccpa", state.ccpa)):
        for purpose, p in (purposes or {}).items():
            rows.append(
                ConsentRow(
                    regulation=regulation,
                    purpose=str(purpose).strip().lower(),
                    consented=p.consented,
                    ts=int(p.timestamp_unixtime_ms) if p.timestamp_unixtime_ms is not None else None,
                    document=p.document,
                    location=p.location,
                    hardware_id=p.hardware_id,
                )
            )
    return rows


MAX_AMOUNT = Decimal(10) ** 20
AMOUNT_STEP = Decimal("1e-9")
AMOUNT_CONTEXT = Context(prec=38)  # the store's DECIMAL(38, 9); the default 28 digits would overflow


def _amount(value: float | int, where: str, errors: list[str]) -> Decimal | None:
    """Money as an exact decimal with 9 places; larger than 10^20 is refused rather than rounded."""
    amount = Decimal(str(value))
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        errors.append(f"{where}: {value} is out of range (at most 20 digits before the decimal point)")
        return None
    return amount.quantize(AMOUNT_STEP, rounding=ROUND_HALF_EVEN, context=AMOUNT_CONTEXT).normalize(
        AMOUNT_CONTEXT
    )


def _event_row(
    ev: Any, where: str, historical: bool, received_at: int, errors: list[str], report: LimitReport
) -> EventRow | None:
    data: schema.EventData = ev.data
    raw_ts = data.timestamp_unixtime_ms
    data_out = data.model_dump(exclude_none=True)
    if raw_ts is None:
        if historical:
            errors.append(f"{where}.data.timestamp_unixtime_ms: required for historical data")
            return None
        ts = received_at
    else:
        ts = int(raw_ts)
        if ts < MIN_TIMESTAMP_MS:
            errors.append(
                f"{where}.data.timestamp_unixtime_ms: {ts} is before 2000-01-01; "
                "timestamps are milliseconds since the epoch, not seconds"
            )
            return None
        if historical and ts > received_at - HISTORICAL_MIN_AGE_MS:
            errors.append(
                f"{where}.data.timestamp_unixtime_ms: historical data must be at least 72 hours old; "
                "send recent data to /v2/events or /v2/bulkevents"
            )
            return None
        if ts > received_at + FUTURE_TOLERANCE_MS:
            data_out["original_timestamp_unixtime_ms"] = ts
            ts = received_at
    attrs = {
        k: v
        for k, v in clip_attributes(
            data.custom_attributes or {}, f"{where}.data.custom_attributes", report
        ).items()
        if v is not None
    }
    if attrs or data.custom_attributes is not None:
        data_out["custom_attributes"] = attrs
    name: str | None = None
    custom_event_type = action = transaction_id = currency_code = coupon_code = None
    total: Decimal | None = None
    products: list[dict[str, Any]] = []
    is_install = is_upgrade = False
    if isinstance(ev, schema.CustomEvent):
        name = clip_name(ev.data.event_name, f"{where}.data.event_name", report)
        custom_event_type = ev.data.custom_event_type
    elif isinstance(ev, schema.ScreenViewEvent) and ev.data.screen_name is not None:
        name = clip_name(ev.data.screen_name, f"{where}.data.screen_name", report)
    elif isinstance(ev, schema.CommerceEvent):
        cd = ev.data
        currency_code = cd.currency_code
        if cd.product_action is not None:
            pa = cd.product_action
            action = pa.action
            if pa.total_amount is not None:
                total = _amount(pa.total_amount, f"{where}.data.product_action.total_amount", errors)
                if total is None:
                    return None
            transaction_id = str(pa.transaction_id) if pa.transaction_id is not None else None
            coupon_code = pa.coupon_code
            products = [
                clip_value(p.model_dump(exclude_none=True), f"{where}.products", report)
                for p in pa.products or []
            ]
        elif cd.promotion_action is not None:
            action = cd.promotion_action.action
    elif isinstance(ev, schema.StateTransitionEvent):
        is_install = bool(ev.data.is_first_run)
        is_upgrade = bool(ev.data.is_upgrade)
    elif ev.event_type == "first_run":
        is_install = True
    return EventRow(
        event_type=ev.event_type,
        name=name,
        custom_event_type=custom_event_type,
        action=action,
        is_install=is_install,
        is_upgrade=is_upgrade,
        ts=ts,
        total_amount=total,
        transaction_id=transaction_id,
        currency_code=currency_code,
        coupon_code=coupon_code,
        attrs=attrs,
        products=products,
        source_message_id=data.source_message_id,
        data=data_out,
    )
