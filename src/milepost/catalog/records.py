"""Immutable records the catalog hands to callers; ORM objects never leave the catalog."""

from __future__ import annotations

from dataclasses import dataclass

PLATFORMS: tuple[str, ...] = ("ios", "android", "web", "server", "feed")
SCOPES: tuple[str, ...] = ("admin", "editor", "viewer")


@dataclass(frozen=True, slots=True)
class Workspace:
    """A group of inputs, e.g. one per brand or region."""

    id: int
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Input:
    """One source of data with its Events API key; the secret is never part of the record."""

    id: int
    workspace_id: int
    workspace_name: str
    name: str
    platform: str
    kind: str
    key: str
    enabled: bool
    created_at: int
    secret_rotated_at: int


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """The account-wide settings; `profile_lifetime_days=None` means "same as the lookback"."""

    audience_limit: int = 20
    lookback_days: int = 90
    profile_lifetime_days: int | None = None
    retention_days: int = 400
    request_dedupe_days: int = 30
    message_dedupe_days: int = 7

    @property
    def effective_profile_lifetime_days(self) -> int:
        """The profile lifetime in force, resolving the "same as lookback" default."""
        if self.profile_lifetime_days is None:
            return self.lookback_days
        return self.profile_lifetime_days


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A management API bearer token; its plaintext is shown only when it is created."""

    id: int
    name: str
    scope: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None
