"""Turn a parsed Events API body into NormalizedBatch values, or a list of errors naming batch and field."""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from pydantic import ValidationError

from milepost.errors import InvalidBatch
from milepost.ingest import schema
from milepost.ingest.limits import (
    MAX_ATTRIBUTES,
    MAX_NAME,
    MAX_VALUE,
    LimitReport,
    clip_attributes,
    clip_name,
    clip_value,
)
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
    mark = len(report.messages)
    try:
        return _fast_batch(raw, index, where, historical, received_at, report)
    except _Slow:
        del report.messages[mark:]  # the pydantic path reports the same changes again
    try:
        batch = schema.Batch.model_validate(raw)
    except ValidationError as exc:
        raise InvalidBatch(exc.errors()[0]["msg"], [_format_error(where, e) for e in exc.errors()]) from None
    errors: list[str] = []
    raw_events = raw.get("events") or []
    events = [
        row
        for j, ev in enumerate(batch.events or [])
        if (
            row := _event_row(
                ev, raw_events[j].get("data"), f"{where}.events[{j}]", historical, received_at, errors, report
            )
        )
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


def _in_sent_order(dumped: dict[str, Any], sent: Any) -> dict[str, Any]:
    """`dumped` with its keys in the order the sender wrote them (what the fast path keeps)."""
    if not isinstance(sent, dict):
        return dumped
    out = {k: dumped[k] for k in sent if k in dumped}
    if len(out) < len(dumped):
        out.update((k, v) for k, v in dumped.items() if k not in out)
    return out


def _event_row(
    ev: Any,
    raw_data: Any,
    where: str,
    historical: bool,
    received_at: int,
    errors: list[str],
    report: LimitReport,
) -> EventRow | None:
    data: schema.EventData = ev.data
    raw_ts = data.timestamp_unixtime_ms
    data_out = _in_sent_order(data.model_dump(exclude_none=True), raw_data)
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


# ---- the fast path -----------------------------------------------------------------------------
#
# Most batches are plainly well formed. For those, checking the parsed JSON directly gives the same
# NormalizedBatch as the pydantic models at a fraction of the cost. Anything outside that plain
# subset (a coercion pydantic would make, an error, a rare field) raises `_Slow`, and the batch
# goes through pydantic, which stays the one source of validation rules and error messages.


class _Slow(Exception):
    """The batch needs the pydantic path."""


_NONE = type(None)
_SCALAR_TYPES = frozenset({str, int, float, bool, _NONE})
_LIST_ITEM_TYPES = frozenset({str, int, float, bool})
_STR_OR_NONE = frozenset({str, _NONE})
_STR_INT_OR_NONE = frozenset({str, int, _NONE})
_NUMBER_OR_NONE = frozenset({int, float, _NONE})
_BOOL_OR_NONE = frozenset({bool, _NONE})
_ENVIRONMENTS = frozenset({"production", "development"})
_CUSTOM_EVENT_TYPES = frozenset(schema.CUSTOM_EVENT_TYPES)
_GENERIC_EVENT_TYPES = frozenset(schema.GENERIC_EVENT_TYPES)
_PRODUCT_ACTIONS = frozenset(schema.PRODUCT_ACTIONS)
_PROMOTION_ACTIONS = frozenset(schema.PROMOTION_ACTIONS)
_TRANSITIONS = frozenset(
    {"application_initialized", "application_exit", "application_background", "application_foreground"}
)
_EVENT_TYPES = frozenset(
    {
        "custom_event",
        "screen_view",
        "commerce_event",
        "application_state_transition",
        *schema.GENERIC_EVENT_TYPES,
    }
)
# Nested objects keep model_dump's order (declared fields first, then the extra fields); an event's
# `data` keeps the order it was sent in, on both paths.
_PRODUCT_ACTION_FIELDS = tuple(schema.ProductAction.model_fields)
_PRODUCT_FIELDS = tuple(schema.Product.model_fields)
_PROMOTION_FIELDS = tuple(schema.PromotionAction.model_fields)
_DEVICE_INFO_FIELDS = tuple(schema.DeviceInfo.model_fields)
_MIN_MPID, _MAX_MPID = -(2**63), 2**63 - 1
# Builds an EventRow from a tuple of all its fields without the named tuple's Python-level __new__.
_new_row = tuple.__new__


@functools.lru_cache(maxsize=4096, typed=True)
def _cached_amount(value: float | int) -> Decimal | None:
    """`_amount` for the fast path, None when out of range; amounts repeat (prices, carts)."""
    errors: list[str] = []
    return _amount(value, "", errors)


def _dump(raw: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """What `model_dump(exclude_none=True)` gives for an already checked model without nested models."""
    out = {f: raw[f] for f in fields if raw.get(f) is not None}
    for k, v in raw.items():
        if v is not None and k not in out:
            out[k] = v
    return out


def _check_attrs(attrs: Any, list_items: bool) -> bool:
    """Raise `_Slow` unless `attrs` is a plain attribute map; return whether a size limit may apply."""
    if type(attrs) is not dict:
        raise _Slow
    clip = len(attrs) > MAX_ATTRIBUTES
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            if len(v) > MAX_VALUE:
                clip = True
        elif t not in _SCALAR_TYPES:
            if not list_items or t is not list:
                raise _Slow
            for item in v:
                if type(item) not in _LIST_ITEM_TYPES:
                    raise _Slow
            clip = True  # lists have limits of their own; clip_attributes applies them
        if len(k) > MAX_NAME:
            clip = True
    return clip


def _fast_batch(
    raw: dict[str, Any], index: int, where: str, historical: bool, received_at: int, report: LimitReport
) -> NormalizedBatch:
    get = raw.get
    environment = get("environment", "production")
    if type(environment) is not str or environment not in _ENVIRONMENTS or get("consent_state") is not None:
        raise _Slow
    mpid = get("mpid")
    if mpid is not None and (type(mpid) is not int or mpid == 0 or not _MIN_MPID <= mpid <= _MAX_MPID):
        raise _Slow
    source_request_id = get("source_request_id")
    if type(source_request_id) not in _STR_OR_NONE or type(get("ip")) not in _STR_OR_NONE:
        raise _Slow
    user_attributes = get("user_attributes")
    clip_user_attributes = user_attributes is not None and _check_attrs(user_attributes, True)
    deleted = get("deleted_user_attributes")
    if deleted is not None and (type(deleted) is not list or any(type(n) is not str for n in deleted)):
        raise _Slow
    app_info = get("application_info")
    if app_info is not None and type(app_info) is not dict:
        raise _Slow
    device_info = get("device_info")
    if device_info is not None and (
        type(device_info) is not dict
        or "app_version" in device_info
        or any(type(device_info.get(f)) not in _STR_OR_NONE for f in _DEVICE_INFO_FIELDS)
    ):
        raise _Slow
    raw_events = get("events")
    if raw_events is not None and type(raw_events) is not list:
        raise _Slow
    events = [
        _fast_event(ev, where, j, historical, received_at, report) for j, ev in enumerate(raw_events or ())
    ]
    if historical and not events:
        raise _Slow
    identities = _fast_identities(get("user_identities"), device_info)
    attributes_deleted = [
        clip_name(n, f"{where}.deleted_user_attributes", report) if len(n) > MAX_NAME else n
        for n in deleted or ()
    ]
    attributes_set: dict[str, Any] = {}
    if user_attributes:
        if clip_user_attributes:
            user_attributes = clip_attributes(user_attributes, f"{where}.user_attributes", report)
        for name, value in user_attributes.items():
            if value is None:
                attributes_deleted.append(name)
            else:
                attributes_set[name] = value
    device = None
    if device_info is not None:
        fields = {k: str(v) for k in DEVICE_FIELDS if (v := device_info.get(k)) is not None}
        app_version = (app_info or {}).get("application_version")
        if app_version is not None:
            fields["app_version"] = str(app_version)
        ids = {
            k: v.strip() for k in DEVICE_ID_TYPES if isinstance(v := device_info.get(k), str) and v.strip()
        }
        device = DeviceReport(fields=fields, device_ids=ids)
    return NormalizedBatch(
        index=index,
        environment=environment,
        historical=historical,
        mpid=mpid,
        identities=identities,
        attributes_set=attributes_set,
        attributes_deleted=attributes_deleted,
        device=device,
        consents=[],
        source_request_id=source_request_id,
        events=events,
        body=raw,
    )


def _fast_identities(user_identities: Any, device_info: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    if user_identities is not None:
        if type(user_identities) is not dict:
            raise _Slow
        for raw_type, raw_value in user_identities.items():
            id_type = IDENTITY_ALIASES.get(raw_type, raw_type)
            if id_type not in USER_IDENTITY_TYPES or type(raw_value) not in _STR_INT_OR_NONE:
                raise _Slow
            if raw_value is None:
                continue
            value = str(raw_value).strip()
            if value:
                out[id_type] = (value, value.lower() if id_type == "email" else value)
    if device_info is not None:
        for id_type in DEVICE_ID_TYPES:
            raw_value = device_info.get(id_type)
            if isinstance(raw_value, str) and raw_value.strip():
                out[id_type] = (raw_value.strip(), raw_value.strip())
    return out


def _fast_event(
    ev: Any, batch_where: str, j: int, historical: bool, received_at: int, report: LimitReport
) -> EventRow:
    if type(ev) is not dict:
        raise _Slow
    event_type = ev.get("event_type")
    if type(event_type) is not str or event_type not in _EVENT_TYPES:
        raise _Slow
    data = ev.get("data", _NONE) if event_type in _GENERIC_EVENT_TYPES else ev.get("data")
    if data is _NONE:
        data = {}
    elif type(data) is not dict:
        raise _Slow
    get = data.get
    raw_ts = get("timestamp_unixtime_ms")
    if raw_ts is None:
        if historical:
            raise _Slow
        ts = received_at
    else:
        if type(raw_ts) not in _NUMBER_OR_NONE or not 0 <= raw_ts <= schema.MAX_TIMESTAMP_MS:
            raise _Slow
        ts = int(raw_ts)
        if ts < MIN_TIMESTAMP_MS or (historical and ts > received_at - HISTORICAL_MIN_AGE_MS):
            raise _Slow
    source_message_id = get("source_message_id")
    if type(source_message_id) not in _STR_OR_NONE:
        raise _Slow
    custom_attributes = get("custom_attributes")
    clip_custom_attributes = custom_attributes is not None and _check_attrs(custom_attributes, False)
    name: str | None = None
    custom_event_type = action = transaction_id = currency_code = coupon_code = None
    total: Decimal | None = None
    products: list[dict[str, Any]] = []
    is_install = is_upgrade = False
    nested: dict[str, Any] = {}
    if event_type == "custom_event":
        name = get("event_name")
        custom_event_type = get("custom_event_type")
        if type(name) is not str or not name or type(custom_event_type) is not str:
            raise _Slow
        if custom_event_type not in _CUSTOM_EVENT_TYPES:
            raise _Slow
    elif event_type == "screen_view":
        name = get("screen_name")
        if type(name) not in _STR_OR_NONE:
            raise _Slow
    elif event_type == "commerce_event":
        currency_code = get("currency_code")
        impressions = get("product_impressions")
        if type(currency_code) not in _STR_OR_NONE or (
            impressions is not None
            and (type(impressions) is not list or any(type(i) is not dict for i in impressions))
        ):
            raise _Slow
        pa = get("product_action")
        promo = get("promotion_action")
        if promo is not None:
            if type(promo) is not dict or type(promo.get("action")) is not str:
                raise _Slow
            if promo["action"] not in _PROMOTION_ACTIONS:
                raise _Slow
            nested["promotion_action"] = _dump(promo, _PROMOTION_FIELDS)
        if pa is not None:
            if (
                type(pa) is not dict
                or type(pa.get("action")) is not str
                or pa["action"] not in _PRODUCT_ACTIONS
            ):
                raise _Slow
            raw_total = pa.get("total_amount")
            transaction = pa.get("transaction_id")
            coupon_code = pa.get("coupon_code")
            raw_products = pa.get("products")
            if (
                type(raw_total) not in _NUMBER_OR_NONE
                or type(transaction) not in _STR_INT_OR_NONE
                or type(coupon_code) not in _STR_OR_NONE
                or (raw_products is not None and type(raw_products) is not list)
            ):
                raise _Slow
            for p in raw_products or ():
                if (
                    type(p) is not dict
                    or type(p.get("id")) not in _STR_INT_OR_NONE
                    or type(p.get("name")) not in _STR_OR_NONE
                    or type(p.get("category")) not in _STR_OR_NONE
                    or type(p.get("brand")) not in _STR_OR_NONE
                    or type(p.get("price")) not in _NUMBER_OR_NONE
                    or type(p.get("quantity")) not in _NUMBER_OR_NONE
                ):
                    raise _Slow
            action = pa["action"]
            if raw_total is not None:
                total = _cached_amount(raw_total)
                if total is None:
                    raise _Slow
            transaction_id = str(transaction) if transaction is not None else None
            products = [_dump(p, _PRODUCT_FIELDS) for p in raw_products or ()]
            dumped = _dump(pa, _PRODUCT_ACTION_FIELDS)
            if raw_products is not None:
                dumped["products"] = products  # the same values; nothing changes them later
            nested["product_action"] = dumped
        elif promo is not None:
            action = promo["action"]
    elif event_type == "application_state_transition":
        transition = get("application_transition_type")
        first_run = get("is_first_run")
        upgrade = get("is_upgrade")
        if (
            (transition is not None and (type(transition) is not str or transition not in _TRANSITIONS))
            or type(first_run) not in _BOOL_OR_NONE
            or type(upgrade) not in _BOOL_OR_NONE
        ):
            raise _Slow
        is_install = bool(first_run)
        is_upgrade = bool(upgrade)
    elif event_type == "first_run":
        is_install = True
    # The sent object itself when nothing in it changes (it is only read from here on), else a copy.
    data_out = data if None not in data.values() else {k: v for k, v in data.items() if v is not None}
    if nested:
        data_out = {**data_out, **nested}  # replaced in place: the keys keep their position
    if raw_ts is not None and ts > received_at + FUTURE_TOLERANCE_MS:
        data_out = {**data_out, "original_timestamp_unixtime_ms": ts}
        ts = received_at
    attrs: dict[str, Any] = {}
    if custom_attributes is not None:
        clipped = custom_attributes
        if clip_custom_attributes:
            where = f"{batch_where}.events[{j}]"
            clipped = clip_attributes(custom_attributes, f"{where}.data.custom_attributes", report)
        if clipped is custom_attributes and None not in custom_attributes.values():
            attrs = custom_attributes
        else:
            attrs = {k: v for k, v in clipped.items() if v is not None}
            data_out = {**data_out, "custom_attributes": attrs}
    if name is not None and len(name) > MAX_NAME:
        field_name = "event_name" if event_type == "custom_event" else "screen_name"
        name = clip_name(name, f"{batch_where}.events[{j}].data.{field_name}", report)
    return _new_row(
        EventRow,
        (
            event_type,
            name,
            custom_event_type,
            action,
            is_install,
            is_upgrade,
            ts,
            total,
            transaction_id,
            currency_code,
            coupon_code,
            attrs,
            products,
            source_message_id,
            data_out,
        ),
    )
