"""The engine seam: what ingest and the API need from a store, whatever engine holds the data."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from milepost.errors import EngineError
from milepost.ingest.plan import CommitPlan, Lookups

if TYPE_CHECKING:
    from milepost.audiences.engine import FullCalculator
    from milepost.audiences.sample import SampleSource
    from milepost.config import Config

ENGINE_GROUP = "milepost.engines"
EMBEDDED = "duckdb"


class Store(Lookups, Protocol):
    """A durable store of events and profiles with one writer."""

    def apply(self, plan: CommitPlan) -> None:
        """Write the whole plan in one durable transaction (it survives a crash once this returns)."""
        ...

    def profile(self, mpid: int) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def open_calculator(config: Config) -> FullCalculator | None:
    """The engine that runs full calculations (`MILEPOST_ENGINE`); None: the embedded one does.

    Engines are found by name in the `milepost.engines` entry points; a distributed one provides
    `from_config(config)` returning a `FullCalculator`.
    """
    if config.engine == EMBEDDED:
        return None
    found = [ep for ep in entry_points(group=ENGINE_GROUP) if ep.name == config.engine]
    if not found:
        known = sorted({ep.name for ep in entry_points(group=ENGINE_GROUP)} | {EMBEDDED})
        raise EngineError(f"MILEPOST_ENGINE: unknown engine {config.engine!r}; known: {', '.join(known)}")
    calculator: FullCalculator = found[0].load().from_config(config)
    return calculator


def open_sample_source(calculator: FullCalculator | None) -> SampleSource | None:
    """Where the estimator's sample is selected at a rebuild: on the calculator's engine when it
    offers that (`sample_source()`); None: in the embedded store."""
    offer = getattr(calculator, "sample_source", None)
    if offer is None:
        return None
    source: SampleSource = offer()
    return source
