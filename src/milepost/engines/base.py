"""The engine seam: what ingest and the API need from a store, whatever engine holds the data."""

from __future__ import annotations

from typing import Any, Protocol

from milepost.ingest.plan import CommitPlan, Lookups


class Store(Lookups, Protocol):
    """A durable store of events and profiles with one writer."""

    def apply(self, plan: CommitPlan) -> None:
        """Write the whole plan in one durable transaction (it survives a crash once this returns)."""
        ...

    def profile(self, mpid: int) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...
