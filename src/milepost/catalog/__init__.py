"""The catalog (control plane): workspaces, inputs, account settings and API tokens."""

from __future__ import annotations

from milepost.catalog.records import PLATFORMS, SCOPES, AccountSettings, ApiToken, Input, Workspace
from milepost.catalog.repository import Catalog

__all__ = ["PLATFORMS", "SCOPES", "AccountSettings", "ApiToken", "Catalog", "Input", "Workspace"]
