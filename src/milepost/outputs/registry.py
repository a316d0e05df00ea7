"""Output types, registered the way a third party registers one: the entry-point group `milepost.outputs`.

An entry point names an `OutputType` object (or a zero-argument factory of one). The built-ins are
listed in Milepost's own package metadata like any plugin; when that metadata is missing (a source
tree that was not reinstalled), they are loaded from their modules under the same names.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeGuard, runtime_checkable

import httpx

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.catalog.output_rows import allow_output_types
from milepost.clock import Clock
from milepost.outputs.policy import Attempt

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "milepost.outputs"
BUILTINS: Mapping[str, str] = {
    "webhook": "milepost.outputs.webhook:WEBHOOK",
    "file": "milepost.outputs.file:FILE",
    "firehose": "milepost.outputs.firehose:FIREHOSE",
    "braze": "milepost.outputs.braze:BRAZE",
}
# Settings that hold credentials: never shown by the API (a type may name its own in `secret_settings`).
DEFAULT_SECRET_SETTINGS = ("secret", "api_key", "token", "password")


@dataclass(frozen=True, slots=True)
class OutputContext:
    """What an output may use: the shared HTTP client, the clock, and the operator's network rule."""

    http: httpx.Client
    clock: Clock
    allow_private: bool


class Output(Protocol):
    """One connection's sender: delivers a batch of change records and says how it went."""

    batch_size: int

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt: ...


@runtime_checkable
class JsonOutput(Output, Protocol):
    """An output that can also take a batch already written as JSON: `changes` is the records of
    `send`, serialised and joined by commas (a synchronisation's adds, written by the store)."""

    def send_json(self, changes: bytes, idempotency_key: str) -> Attempt: ...


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a partner that keeps audience subscriptions is told when a connection starts, changes or ends."""

    action: str  # add | update | remove
    audience_id: int
    audience_name: str
    settings: Mapping[str, Any]
    previous_settings: Mapping[str, Any] | None = None


@runtime_checkable
class SubscribingOutput(Output, Protocol):
    """An output whose partner is told about subscriptions and checked periodically (Firehose).

    `verify_interval_s` is how often `verify` runs while the connection is idle; an answer that is
    not ok faults the connection as a refused batch would."""

    verify_interval_s: float

    def subscribe(self, subscription: Subscription) -> Attempt: ...

    def verify(self) -> Attempt: ...


@runtime_checkable
class OutputType(Protocol):
    name: str

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        """Settings as the type will use them, or InvalidRequest saying what is wrong."""
        ...

    def open(self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext) -> Output:
        """A sender for one connection; raises InvalidRequest when the settings cannot work."""
        ...


def secret_settings(kind: OutputType | None) -> tuple[str, ...]:
    """The setting names an output type keeps secret."""
    named = getattr(kind, "secret_settings", None)
    return tuple(named) if named is not None else DEFAULT_SECRET_SETTINGS


def default_identities(kind: OutputType | None, settings: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The identity types a type accepts when its output names none (None: every identity)."""
    pick = getattr(kind, "default_identities", None)
    return None if pick is None else pick(settings)


def redacted(kind: OutputType | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as the API shows them: every credential replaced by a mask."""
    hidden = set(secret_settings(kind))
    return {k: ("••••" if k in hidden and v not in (None, "") else v) for k, v in settings.items()}


_lock = threading.Lock()
_types: dict[str, OutputType] | None = None


def _load(spec: str) -> object:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _as_type(obj: object) -> OutputType | None:
    if isinstance(obj, OutputType):
        return obj
    if callable(obj):
        made = obj()
        if isinstance(made, OutputType):
            return made
    return None


def output_types() -> dict[str, OutputType]:
    """Every registered output type by name (loaded once)."""
    global _types
    with _lock:
        if _types is None:
            found: dict[str, OutputType] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    kind = _as_type(ep.load())
                except Exception:
                    log.exception("cannot load output type %r from %s", ep.name, ep.value)
                    continue
                if kind is None:
                    log.error("entry point %r (%s) is not an output type", ep.name, ep.value)
                    continue
                found.setdefault(ep.name, kind)
            for name, spec in BUILTINS.items():
                if name not in found:
                    kind = _as_type(_load(spec))
                    if kind is not None:
                        found[name] = kind
            _types = found
            allow_output_types(found)
        return dict(_types)


def output_type(name: str) -> OutputType | None:
    return output_types().get(name)


def register(kind: OutputType) -> None:
    """Add an output type at run time (tests, embedding applications)."""
    output_types()
    with _lock:
        assert _types is not None
        _types[kind.name] = kind
        allow_output_types(_types)


# Whether an output implements a protocol, found once per class (its instances have the same
# members): a check against a runtime-checkable protocol inspects every member, on every step.
_IMPLEMENTS: dict[tuple[type, type], bool] = {}


def _implements(sender: object, protocol: type) -> bool:
    key = (type(sender), protocol)
    found = _IMPLEMENTS.get(key)
    if found is None:
        found = _IMPLEMENTS[key] = isinstance(sender, protocol)
    return found


def takes_json(sender: Output | None) -> TypeGuard[JsonOutput]:
    return sender is not None and _implements(sender, JsonOutput)


def subscribes(sender: Output | None) -> TypeGuard[SubscribingOutput]:
    return sender is not None and _implements(sender, SubscribingOutput)
