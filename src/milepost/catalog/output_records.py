"""Immutable records of outputs and connections, and the values their fields may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The built-in output types (SPEC §6); third-party types will join them through entry points.
OUTPUT_TYPES: tuple[str, ...] = ("file", "webhook", "firehose", "braze")
HASHINGS: tuple[str, ...] = ("sha256", "sha1", "md5")
CONNECTION_STATUSES: tuple[str, ...] = ("active", "inactive")
ON_DEACTIVATE: tuple[str, ...] = ("keep", "remove_members")
HEALTHS: tuple[str, ...] = ("ok", "retrying", "faulted")


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A configured partner with its settings (credentials included: never show them to users).

    `accepted_identities` None means the output type's default; `hashing` None sends values as they are.
    """

    id: int
    type: str
    name: str
    settings: dict[str, Any]
    accepted_identities: tuple[str, ...] | None
    hashing: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """A link from one audience to one output.

    `status` is set by the user and decides whether the audience is activated; `health` is set by
    delivery (a faulted connection stays active). `on_deactivate` says what happens to the partner's
    copy when the connection stops: `keep` it, or `remove_members` first.
    """

    id: int
    audience_id: int
    output_id: int
    output_name: str
    output_type: str
    status: str
    settings: dict[str, Any]
    on_deactivate: str
    health: str
    created_at: int
    updated_at: int
