"""The mParticle batch schema as pydantic models: the shape check of the Events API.

Unknown fields are kept (mParticle's schema is large and we store what we are sent); only the
fields Milepost reads are typed. Limits and normalisation happen afterwards in `normalize`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

Scalar = str | int | float | bool | None
AttributeValue = str | int | float | bool | list[str | int | float | bool] | None
Number = int | float

CUSTOM_EVENT_TYPES = (
    "navigation",
    "location",
    "search",
    "transaction",
    "user_content",
    "user_preference",
    "social",
    "media",
    "attribution",
    "other",
    "unknown",
)
PRODUCT_ACTIONS = (
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "checkout_option",
    "click",
    "view_detail",
    "purchase",
    "refund",
    "add_to_wishlist",
    "remove_from_wish_list",
    "remove_from_wishlist",
)
PROMOTION_ACTIONS = ("view", "click")
# Event types of mParticle's schema that Milepost stores without reading further.
GENERIC_EVENT_TYPES = (
    "session_start",
    "session_end",
    "crash_report",
    "uninstall",
    "opt_out",
    "push_registration",
    "push_message",
    "push_reaction",
    "user_attribute_change",
    "user_identity_change",
    "breadcrumb",
    "network_performance",
    "first_run",
    "profile",
    "pre_attribution",
    "media",
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _timestamp(v: Any) -> Any:
    if v is None:
        return v
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("must be a number of milliseconds since the epoch")
    if not 0 <= v <= MAX_TIMESTAMP_MS:
        raise ValueError(f"{v} is out of range for a timestamp in milliseconds")
    return v


class EventData(_Open):
    timestamp_unixtime_ms: Number | None = None
    source_message_id: str | None = None
    custom_attributes: dict[str, Scalar] | None = None

    _check_timestamp = field_validator("timestamp_unixtime_ms", mode="before")(_timestamp)


class CustomEventData(EventData):
    event_name: Annotated[str, Field(min_length=1)]
    custom_event_type: Literal[CUSTOM_EVENT_TYPES]  # type: ignore[valid-type]


class ScreenViewData(EventData):
    screen_name: str | None = None


class Product(_Open):
    id: str | int | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: Number | None = None
    quantity: Number | None = None


class ProductAction(_Open):
    action: Literal[PRODUCT_ACTIONS]  # type: ignore[valid-type]
    total_amount: Number | None = None
    transaction_id: str | int | None = None
    coupon_code: str | None = None
    products: list[Product] | None = None


class PromotionAction(_Open):
    action: Literal[PROMOTION_ACTIONS]  # type: ignore[valid-type]


class CommerceEventData(EventData):
    product_action: ProductAction | None = None
    promotion_action: PromotionAction | None = None
    product_impressions: list[dict[str, Any]] | None = None
    currency_code: str | None = None


class StateTransitionData(EventData):
    application_transition_type: (
        Literal[
            "application_initialized", "application_exit", "application_background", "application_foreground"
        ]
        | None
    ) = None
    is_first_run: StrictBool | None = None
    is_upgrade: StrictBool | None = None


class CustomEvent(_Open):
    event_type: Literal["custom_event"]
    data: CustomEventData


class CommerceEvent(_Open):
    event_type: Literal["commerce_event"]
    data: CommerceEventData


class ScreenViewEvent(_Open):
    event_type: Literal["screen_view"]
    data: ScreenViewData


class StateTransitionEvent(_Open):
    event_type: Literal["application_state_transition"]
    data: StateTransitionData


class GenericEvent(_Open):
    event_type: Literal[GENERIC_EVENT_TYPES]  # type: ignore[valid-type]
    data: EventData = EventData()


Event = Annotated[
    CustomEvent | CommerceEvent | ScreenViewEvent | StateTransitionEvent | GenericEvent,
    Field(discriminator="event_type"),
]


class ConsentPurpose(_Open):
    consented: StrictBool
    document: str | None = None
    timestamp_unixtime_ms: Number | None = None
    location: str | None = None
    hardware_id: str | None = None

    _check_timestamp = field_validator("timestamp_unixtime_ms", mode="before")(_timestamp)


class ConsentState(_Open):
    gdpr: dict[str, ConsentPurpose] | None = None
    ccpa: dict[Literal["data_sale_opt_out"], ConsentPurpose] | None = None


class DeviceInfo(_Open):
    platform: str | None = None
    os_version: str | None = None
    device_model: str | None = None
    device_manufacturer: str | None = None
    network_carrier: str | None = None


class Batch(_Open):
    environment: Literal["production", "development"] = "production"
    mpid: int | str | None = None
    user_identities: dict[str, str | int | None] | None = None
    user_attributes: dict[str, AttributeValue] | None = None
    deleted_user_attributes: list[str] | None = None
    device_info: DeviceInfo | None = None
    application_info: dict[str, Any] | None = None
    consent_state: ConsentState | None = None
    source_request_id: str | None = None
    ip: str | None = None
    events: list[Event] | None = None

    @field_validator("mpid", mode="before")
    @classmethod
    def _mpid(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("must be a non-zero integer or a numeric string")
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an integer") from None
        if n == 0:
            raise ValueError("0 is not a valid mpid; omit mpid to resolve the user by identities")
        if not -(2**63) <= n < 2**63:
            raise ValueError("must fit in a signed 64-bit integer")
        return n
