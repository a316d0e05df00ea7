"""Validation of account settings changes, kept pure so every rule is easy to test."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from milepost.catalog.records import AccountSettings
from milepost.errors import InvalidRequest

MAX_AUDIENCE_LIMIT = 10_000
MAX_DAYS = 3650
MAX_DEDUPE_DAYS = 365

SETTING_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(AccountSettings))


def apply_changes(current: AccountSettings, changes: Mapping[str, object], activated: int) -> AccountSettings:
    """The settings after `changes`, or InvalidRequest naming the first field that breaks a rule.

    `activated` is the number of audiences currently activated: the limit cannot go below it.
    """
    unknown = sorted(set(changes) - set(SETTING_NAMES))
    if unknown:
        raise InvalidRequest(
            f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
            f"the settings are {', '.join(SETTING_NAMES)}"
        )
    if isinstance(activated, bool) or not isinstance(activated, int) or activated < 0:
        raise InvalidRequest("activated must be a whole number of audiences, 0 or more")
    for name, value in changes.items():
        _check_type(name, value)
    updated = dataclasses.replace(current, **changes)  # type: ignore[arg-type]

    if "audience_limit" in changes:
        limit = updated.audience_limit
        _check_range("audience_limit", limit, 0, MAX_AUDIENCE_LIMIT, "audiences")
        if limit < activated:
            raise InvalidRequest(
                f"audience_limit cannot be set below the {activated} audiences currently activated; "
                f"deactivate audiences first or choose a limit of at least {activated}"
            )
    if "lookback_days" in changes:
        _check_range("lookback_days", updated.lookback_days, 1, MAX_DAYS, "days")
    if "profile_lifetime_days" in changes and updated.profile_lifetime_days is not None:
        _check_range("profile_lifetime_days", updated.profile_lifetime_days, 1, MAX_DAYS, "days")
    if "retention_days" in changes:
        _check_range("retention_days", updated.retention_days, 1, MAX_DAYS, "days")
    for name in ("request_dedupe_days", "message_dedupe_days"):
        if name in changes:
            _check_range(name, getattr(updated, name), 1, MAX_DEDUPE_DAYS, "days")

    if updated.retention_days < updated.lookback_days:
        if "retention_days" in changes:
            raise InvalidRequest(
                f"retention_days ({updated.retention_days}) cannot be below lookback_days "
                f"({updated.lookback_days}): events inside the lookback must be kept; "
                f"choose at least {updated.lookback_days} or lower lookback_days in the same request"
            )
        raise InvalidRequest(
            f"lookback_days ({updated.lookback_days}) cannot exceed retention_days "
            f"({updated.retention_days}); raise retention_days in the same request"
        )
    return updated


def _check_type(name: str, value: object) -> None:
    if value is None and name == "profile_lifetime_days":
        return
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " or null for the same as lookback_days" if name == "profile_lifetime_days" else ""
        raise InvalidRequest(f"{name} must be a whole number{hint} (got {value!r})")


def _check_range(name: str, value: int, low: int, high: int, unit: str) -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high} {unit} (got {value})")
