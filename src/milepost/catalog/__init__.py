"""The catalog (control plane): workspaces, inputs, account settings, API tokens, journeys,
milestones with their audiences, calculated attributes, outputs and their connections."""

from __future__ import annotations

from milepost.catalog.journey_records import CalculatedAttributeRecord, JourneyRecord, MilestoneRecord
from milepost.catalog.output_records import (
    CONNECTION_STATUSES,
    HASHINGS,
    HEALTHS,
    ON_DEACTIVATE,
    OUTPUT_TYPES,
    ConnectionRecord,
    OutputRecord,
)
from milepost.catalog.records import PLATFORMS, SCOPES, AccountSettings, ApiToken, Input, Workspace
from milepost.catalog.repository import Catalog

__all__ = [
    "CONNECTION_STATUSES",
    "HASHINGS",
    "HEALTHS",
    "ON_DEACTIVATE",
    "OUTPUT_TYPES",
    "PLATFORMS",
    "SCOPES",
    "AccountSettings",
    "ApiToken",
    "CalculatedAttributeRecord",
    "Catalog",
    "ConnectionRecord",
    "Input",
    "JourneyRecord",
    "MilestoneRecord",
    "OutputRecord",
    "Workspace",
]
