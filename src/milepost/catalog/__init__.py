"""The catalog (control plane): workspaces, inputs, account settings, API tokens, journeys,
milestones with their audiences, and calculated attributes."""

from __future__ import annotations

from milepost.catalog.journey_records import CalculatedAttributeRecord, JourneyRecord, MilestoneRecord
from milepost.catalog.records import PLATFORMS, SCOPES, AccountSettings, ApiToken, Input, Workspace
from milepost.catalog.repository import Catalog

__all__ = [
    "PLATFORMS",
    "SCOPES",
    "AccountSettings",
    "ApiToken",
    "CalculatedAttributeRecord",
    "Catalog",
    "Input",
    "JourneyRecord",
    "MilestoneRecord",
    "Workspace",
]
