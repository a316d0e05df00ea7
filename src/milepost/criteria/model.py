"""The canonical criteria document of SPEC §4 as frozen pydantic models (built by `validation`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Unit = Literal["minutes", "hours", "days", "weeks"]
Scalar = bool | int | float | str
DateValue = int | str

UNIT_MS: dict[str, int] = {
    "minutes": 60_000,
    "hours": 3_600_000,
    "days": 86_400_000,
    "weeks": 604_800_000,
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Duration(Frozen):
    """`{"amount": N, "unit": ...}`: a length of time where a day is always 24 h."""

    amount: int
    unit: Unit

    @property
    def ms(self) -> int:
        return self.amount * UNIT_MS[self.unit]


class Condition(Frozen):
    """One operator applied to a value; `attribute` is None when the leaf names the value itself."""

    attribute: str | None = None
    op: str
    value: Scalar | Duration | None = None
    values: tuple[Scalar, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None


class EventSelector(Frozen):
    """Which events a leaf looks at; omitted fields match anything."""

    event_type: str
    name: str | None = None
    custom_event_type: str | None = None
    action: str | None = None


class SequenceStep(EventSelector):
    where: tuple[Condition, ...] = ()


class LastWindow(Frozen):
    last: Duration


class BetweenAgo(Frozen):
    from_: int = Field(alias="from")
    to: int
    unit: Unit

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class BetweenAgoWindow(Frozen):
    between_ago: BetweenAgo


class DateWindow(Frozen):
    """`since` / `before` / `after` / `on_date` with one date, or `between_dates` with two."""

    kind: Literal["since", "before", "after", "on_date", "between_dates"]
    dates: tuple[DateValue, ...]


class SinceParentEntryWindow(Frozen):
    since_parent_entry: Literal[True] = True


Window = LastWindow | BetweenAgoWindow | DateWindow | SinceParentEntryWindow


class Having(Frozen):
    fn: Literal["count", "sum", "min", "max", "avg", "distinct"] = "count"
    attribute: str | None = None
    op: str = "greater_than"
    value: int | float | None = 0
    min: int | float | None = None
    max: int | float | None = None

    def condition(self) -> Condition:
        return Condition(op=self.op, value=self.value, min=self.min, max=self.max)


DEFAULT_HAVING = Having()


class OpLeaf(Frozen):
    """Fields shared by every leaf that tests one value with an operator."""

    op: str
    value: Scalar | Duration | None = None
    values: tuple[Scalar, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None

    def condition(self) -> Condition:
        return Condition(op=self.op, value=self.value, values=self.values, min=self.min, max=self.max)


class EventLeaf(Frozen):
    type: Literal["event"] = "event"
    event: EventSelector
    where: tuple[Condition, ...] = ()
    having: Having = DEFAULT_HAVING
    window: Window | None = None


class SequenceLeaf(Frozen):
    type: Literal["sequence"] = "sequence"
    first: SequenceStep
    then: SequenceStep
    within: Duration
    completed: bool = True
    window: Window | None = None


class UserAttributeLeaf(OpLeaf):
    type: Literal["user_attribute"] = "user_attribute"
    attribute: str


class CalculatedAttributeLeaf(OpLeaf):
    type: Literal["calculated_attribute"] = "calculated_attribute"
    name: str


class PredictionLeaf(OpLeaf):
    type: Literal["prediction"] = "prediction"
    prediction: str
    measure: Literal["score", "percentile"]

    @property
    def attribute(self) -> str:
        return f"$intelligent_attribute:cortex:{self.prediction}__{self.measure}"


class IdentityLeaf(OpLeaf):
    type: Literal["identity"] = "identity"
    identity: str


class ConsentLeaf(Frozen):
    type: Literal["consent"] = "consent"
    regulation: Literal["gdpr", "ccpa"]
    purpose: str
    state: Literal["consented", "not_consented", "present", "not_present"]


class DeviceLeaf(OpLeaf):
    type: Literal["device"] = "device"
    field: Literal[
        "platform", "os_version", "device_model", "device_manufacturer", "network_carrier", "app_version"
    ]


class FirstSeenLeaf(OpLeaf):
    type: Literal["first_seen"] = "first_seen"


class LastSeenLeaf(OpLeaf):
    type: Literal["last_seen"] = "last_seen"


class AudienceLeaf(Frozen):
    type: Literal["audience"] = "audience"
    audience_id: int | None = None
    journey: str | None = None
    milestone: str | None = None
    member: bool = True
    member_for: Duration | None = None


class ParentEntryLeaf(Frozen):
    type: Literal["parent_entry"] = "parent_entry"
    op: Literal["within_last", "more_than_ago"]
    value: Duration


Leaf = Annotated[
    EventLeaf
    | SequenceLeaf
    | UserAttributeLeaf
    | CalculatedAttributeLeaf
    | PredictionLeaf
    | IdentityLeaf
    | ConsentLeaf
    | DeviceLeaf
    | FirstSeenLeaf
    | LastSeenLeaf
    | AudienceLeaf
    | ParentEntryLeaf,
    Field(discriminator="type"),
]


class AllGroup(Frozen):
    all: tuple[Criteria, ...]


class AnyGroup(Frozen):
    any: tuple[Criteria, ...]


class NotGroup(Frozen):
    not_: Criteria = Field(alias="not")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Criteria = AllGroup | AnyGroup | NotGroup | Leaf


class CalcWindow(Frozen):
    """Window of a calculated attribute: `since` a date or `within` a duration."""

    since: DateValue | None = None
    within: Duration | None = None


class CalculatedAttribute(Frozen):
    """An account-level calculated attribute definition (SPEC §4.5)."""

    name: str
    calculation: Literal[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "most_frequent",
        "unique_count",
        "first_value",
        "last_value",
        "first_timestamp",
        "last_timestamp",
        "unique_list",
    ]
    event: EventSelector
    attribute: str | None = None
    where: tuple[Condition, ...] = ()
    window: CalcWindow | None = None


AllGroup.model_rebuild()
AnyGroup.model_rebuild()
NotGroup.model_rebuild()
