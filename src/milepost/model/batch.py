"""A batch after validation and normalisation: what ingest hands to the store, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

# Resolution order of SPEC §3: user identities first, then device ids.
USER_IDENTITY_PRIORITY: tuple[str, ...] = (
    "customer_id",
    "email",
    "mobile_number",
    "other",
    *(f"other_id_{n}" for n in range(2, 11)),
)
OTHER_USER_IDENTITIES: tuple[str, ...] = (
    "facebook",
    "facebook_custom_audience_id",
    "google",
    "microsoft",
    "twitter",
    "yahoo",
    "phone_number_2",
    "phone_number_3",
)
USER_IDENTITY_TYPES = frozenset(USER_IDENTITY_PRIORITY + OTHER_USER_IDENTITIES)
DEVICE_ID_TYPES: tuple[str, ...] = (
    "ios_idfv",
    "ios_advertising_id",
    "android_uuid",
    "android_advertising_id",
    "push_token",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "amp_id",
    "device_application_stamp",
)
RESOLUTION_ORDER: tuple[str, ...] = USER_IDENTITY_PRIORITY + DEVICE_ID_TYPES

DEVICE_FIELDS: tuple[str, ...] = (
    "platform",
    "os_version",
    "device_model",
    "device_manufacturer",
    "network_carrier",
    "app_version",
)


class EventRow(NamedTuple):
    """One event, in the columns of the store's `events` table (docs/store-layout.md).

    A tuple so that a list of them turns into columns in one `zip`.
    """

    event_type: str
    name: str | None
    custom_event_type: str | None
    action: str | None
    is_install: bool
    is_upgrade: bool
    ts: int
    total_amount: Decimal | None
    transaction_id: str | None
    currency_code: str | None
    coupon_code: str | None
    attrs: dict[str, Any]
    products: list[dict[str, Any]]
    source_message_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConsentRow:
    regulation: str
    purpose: str
    consented: bool
    ts: int | None
    document: str | None
    location: str | None
    hardware_id: str | None


@dataclass(frozen=True, slots=True)
class DeviceReport:
    fields: dict[str, str]
    device_ids: dict[str, str]

    @property
    def device_key(self) -> str:
        for id_type in DEVICE_ID_TYPES:
            if id_type in self.device_ids:
                return f"{id_type}:{self.device_ids[id_type]}"
        return ""


@dataclass(slots=True)
class NormalizedBatch:
    """One accepted batch. `identities` maps identity type to (value, lookup key)."""

    index: int
    environment: str
    historical: bool
    mpid: int | None
    identities: dict[str, tuple[str, str]]
    attributes_set: dict[str, Any]
    attributes_deleted: list[str]
    device: DeviceReport | None
    consents: list[ConsentRow]
    source_request_id: str | None
    events: list[EventRow]
    body: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def counts_as_seen(self) -> bool:
        """Only real-time production batches make a user seen and feed what criteria read."""
        return self.environment == "production" and not self.historical


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """A whole Events API request: all-or-nothing, from one input, at one receipt time."""

    input_id: int
    received_at: int
    batches: list[NormalizedBatch]


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What the store did with a request."""

    stored_batches: int
    duplicate_batches: int
    stored_events: int
    duplicate_events: int
    mpids: tuple[int, ...]
