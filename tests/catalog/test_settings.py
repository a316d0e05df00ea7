"""Account settings: defaults, changes that persist, and every validation rule."""

from __future__ import annotations

import pytest

from milepost.catalog import AccountSettings, Catalog
from milepost.errors import InvalidRequest


def test_defaults(catalog: Catalog) -> None:
    settings = catalog.get_settings()
    assert settings == AccountSettings(
        audience_limit=20,
        lookback_days=90,
        profile_lifetime_days=None,
        retention_days=400,
        request_dedupe_days=30,
        message_dedupe_days=7,
    )
    assert settings.effective_profile_lifetime_days == 90


def test_changes_are_kept_and_others_untouched(catalog: Catalog, catalog_url: str) -> None:
    updated = catalog.update_settings(audience_limit=50, lookback_days=30, profile_lifetime_days=60)
    assert updated == AccountSettings(audience_limit=50, lookback_days=30, profile_lifetime_days=60)
    assert updated.effective_profile_lifetime_days == 60
    assert catalog.get_settings() == updated
    assert catalog.update_settings(retention_days=365) == AccountSettings(
        audience_limit=50, lookback_days=30, profile_lifetime_days=60, retention_days=365
    )
    with Catalog(catalog_url) as reopened:
        assert reopened.get_settings().retention_days == 365


def test_profile_lifetime_can_go_back_to_the_lookback(catalog: Catalog) -> None:
    catalog.update_settings(profile_lifetime_days=10)
    back = catalog.update_settings(profile_lifetime_days=None, lookback_days=45)
    assert back.profile_lifetime_days is None
    assert back.effective_profile_lifetime_days == 45
    assert catalog.get_settings() == back


def test_no_changes_change_nothing(catalog: Catalog) -> None:
    assert catalog.update_settings() == AccountSettings()


def test_dedupe_windows_can_be_changed(catalog: Catalog) -> None:
    updated = catalog.update_settings(request_dedupe_days=14, message_dedupe_days=1)
    assert (updated.request_dedupe_days, updated.message_dedupe_days) == (14, 1)
    with pytest.raises(InvalidRequest, match="message_dedupe_days must be between 1 and 365"):
        catalog.update_settings(message_dedupe_days=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"audience_limit": -1}, r"audience_limit must be between 0 and 10000 audiences \(got -1\)"),
        ({"audience_limit": 10_001}, "audience_limit must be between 0 and 10000"),
        ({"audience_limit": "5"}, r"audience_limit must be a whole number \(got '5'\)"),
        ({"audience_limit": None}, "audience_limit must be a whole number"),
        ({"lookback_days": True}, "lookback_days must be a whole number"),
        ({"lookback_days": 2.5}, "lookback_days must be a whole number"),
        ({"lookback_days": 0}, "lookback_days must be between 1 and 3650 days"),
        ({"lookback_days": 3651, "retention_days": 3651}, "lookback_days must be between 1 and 3650"),
        ({"profile_lifetime_days": 0}, "profile_lifetime_days must be between 1 and 3650"),
        ({"profile_lifetime_days": 3651}, "profile_lifetime_days must be between 1 and 3650"),
        ({"profile_lifetime_days": "x"}, "profile_lifetime_days must be a whole number or null"),
        ({"retention_days": 3651}, "retention_days must be between 1 and 3650"),
        ({"retention_days": 89}, r"retention_days \(89\) cannot be below lookback_days \(90\)"),
        ({"lookback_days": 401}, r"lookback_days \(401\) cannot exceed retention_days \(400\)"),
        ({"colour": 1}, "unknown setting: colour; the settings are audience_limit, lookback_days"),
        ({"colour": 1, "size": 2}, "unknown settings: colour, size"),
    ],
)
def test_invalid_changes_are_refused_and_change_nothing(
    catalog: Catalog, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        catalog.update_settings(**changes)  # type: ignore[arg-type]
    assert catalog.get_settings() == AccountSettings()


def test_lookback_and_retention_may_move_together(catalog: Catalog) -> None:
    updated = catalog.update_settings(lookback_days=500, retention_days=500)
    assert (updated.lookback_days, updated.retention_days) == (500, 500)
    with pytest.raises(InvalidRequest, match="retention_days"):
        catalog.update_settings(retention_days=499)


def test_the_activated_argument_no_longer_decides_the_floor(catalog: Catalog) -> None:
    # The catalog counts activated audiences itself (see test_connections.py); the argument stays
    # accepted for older callers but neither raises nor lowers the floor of the limit.
    assert catalog.update_settings(audience_limit=2, activated=3).audience_limit == 2
    assert catalog.update_settings(audience_limit=0).audience_limit == 0
    assert catalog.update_settings(lookback_days=7, activated=5).lookback_days == 7


def test_a_negative_activated_count_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest, match="activated"):
        catalog.update_settings(audience_limit=5, activated=-1)
