"""Build one group commit: de-duplicate, resolve identities, merge profile changes per user.

Pure apart from the lookups it asks of the store, so the rules of SPEC §3 live here, not in SQL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from milepost.model.batch import (
    DEVICE_ID_TYPES,
    RESOLUTION_ORDER,
    ConsentRow,
    DeviceReport,
    EventRow,
    IngestOutcome,
    IngestRequest,
    NormalizedBatch,
)


@dataclass
class Snapshot:
    """What one commit needs to know about the stored state, read in one look-up."""

    seen_requests: set[tuple[int, str]] = field(default_factory=set)
    seen_messages: set[tuple[int, str]] = field(default_factory=set)
    owners: dict[tuple[str, str], int] = field(default_factory=dict)  # identity -> owning mpid
    known_mpids: set[int] = field(default_factory=set)  # of `mpids` and the owners, those with a profile
    user_keys: dict[int, dict[str, str]] = field(default_factory=dict)  # their user identities by type


class Lookups(Protocol):
    """What the plan needs to know about the stored state (answered by the engine)."""

    def snapshot(
        self,
        request_keys: set[tuple[int, str]],
        request_since_ms: int,
        message_keys: set[tuple[int, str]],
        message_since_ms: int,
        identity_keys: set[tuple[str, str]],
        mpids: set[int],
    ) -> Snapshot:
        """Request and message keys seen after their `since`, owners of the identity keys, and for
        `mpids` plus those owners: which have a profile and their user identities."""
        ...


@dataclass
class UserChange:
    """All changes one commit makes to one user's row."""

    created_at: int
    is_new: bool
    first_seen: int | None = None
    last_seen: int | None = None
    inputs: set[int] = field(default_factory=set)
    attributes_patch: dict[str, Any] = field(default_factory=dict)


@dataclass
class CommitPlan:
    """Everything one transaction writes."""

    # Per batch: (mpid, input_id, received_at, rows); other events add (environment, historical).
    events: list[tuple[int, int, int, list[EventRow]]] = field(default_factory=list)
    other_events: list[tuple[int, int, int, list[EventRow], str, bool]] = field(default_factory=list)
    batches: list[tuple[int, str, str, int, int, str | None, dict[str, Any]]] = field(default_factory=list)
    users: dict[int, UserChange] = field(default_factory=dict)
    identities: dict[tuple[str, str], tuple[int, str, bool, int]] = field(default_factory=dict)
    released_identities: set[tuple[int, str]] = field(default_factory=set)
    consents: dict[tuple[int, str, str], tuple[ConsentRow, int, int]] = field(default_factory=dict)
    devices: dict[tuple[int, str], tuple[DeviceReport, int]] = field(default_factory=dict)
    request_keys: dict[tuple[int, str], int] = field(default_factory=dict)
    message_keys: dict[tuple[int, str], int] = field(default_factory=dict)
    outcomes: list[IngestOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class DedupeWindows:
    request_ms: int
    message_ms: int


def build_plan(
    requests: list[IngestRequest], lookups: Lookups, windows: DedupeWindows, rng: random.Random
) -> CommitPlan:
    """Apply the ingest rules to a group of requests in arrival order."""
    plan = CommitPlan()
    now = max(r.received_at for r in requests)
    all_batches = [(r, b) for r in requests for b in r.batches]
    req_keys = {(r.input_id, b.source_request_id) for r, b in all_batches if b.source_request_id}
    # Per batch, the message keys of its events (those that have one), in order.
    batch_msg_keys = [
        [(r.input_id, m) for e in b.events if (m := e.source_message_id)] for r, b in all_batches
    ]
    msg_keys = {k for keys in batch_msg_keys for k in keys}
    id_keys = {(t, key) for _, b in all_batches for t, (_, key) in b.identities.items()}
    explicit = {b.mpid for _, b in all_batches if b.mpid is not None}
    snap = lookups.snapshot(
        req_keys, now - windows.request_ms, msg_keys, now - windows.message_ms, id_keys, explicit
    )
    seen_requests, seen_messages = snap.seen_requests, snap.seen_messages
    owners, known_mpids, user_keys = snap.owners, snap.known_mpids, snap.user_keys
    batch_keys = iter(batch_msg_keys)
    message_keys = plan.message_keys
    for request in requests:
        stored = dup_batches = stored_events = dup_events = 0
        mpids: list[int] = []
        for batch in request.batches:
            mkeys = next(batch_keys)
            rkey = (request.input_id, batch.source_request_id) if batch.source_request_id else None
            if rkey is not None and (rkey in seen_requests or rkey in plan.request_keys):
                dup_batches += 1
                continue
            mpid = _resolve(batch, owners, known_mpids, rng)
            mpids.append(mpid)
            if rkey is not None:
                plan.request_keys[rkey] = request.received_at
            kept = _new_events(batch.events, mkeys, seen_messages, message_keys, request)
            dup_events += len(batch.events) - len(kept)
            _apply_batch(plan, request, batch, mpid, kept, owners, known_mpids, user_keys)
            stored += 1
            stored_events += len(kept)
        plan.outcomes.append(IngestOutcome(stored, dup_batches, stored_events, dup_events, tuple(mpids)))
    return plan


def _new_events(
    events: list[EventRow],
    keys: list[tuple[int, str]],
    seen: set[tuple[int, str]],
    taken: dict[tuple[int, str], int],
    request: IngestRequest,
) -> list[EventRow]:
    """The events whose message key is neither stored nor taken earlier; their keys go to `taken`."""
    at = request.received_at
    if seen.isdisjoint(keys) and taken.keys().isdisjoint(keys):
        before = len(taken)
        taken.update(dict.fromkeys(keys, at))
        if len(taken) - before == len(keys):
            return events  # the usual case: every event is new
        for key in keys:  # a key twice in the batch: undo, and keep only its first event
            taken.pop(key, None)
    kept: list[EventRow] = []
    for ev in events:
        if ev.source_message_id:
            mkey = (request.input_id, ev.source_message_id)
            if mkey in seen or mkey in taken:
                continue
            taken[mkey] = at
        kept.append(ev)
    return kept


def _resolve(
    batch: NormalizedBatch, owners: dict[tuple[str, str], int], known: set[int], rng: random.Random
) -> int:
    if batch.mpid is not None:
        return batch.mpid
    for id_type in RESOLUTION_ORDER:
        if id_type in batch.identities:
            owner = owners.get((id_type, batch.identities[id_type][1]))
            if owner is not None:
                return owner
    while True:  # a fresh random, non-zero, signed 64-bit MPID that no profile has
        mpid = rng.randint(-(2**63), 2**63 - 1)
        if mpid != 0 and mpid not in known:
            return mpid


def _apply_batch(
    plan: CommitPlan,
    request: IngestRequest,
    batch: NormalizedBatch,
    mpid: int,
    events: list[EventRow],
    owners: dict[tuple[str, str], int],
    known: set[int],
    user_keys: dict[int, dict[str, str]],
) -> None:
    at = request.received_at
    endpoint = "historical" if batch.historical else "events"
    plan.batches.append(
        (request.input_id, endpoint, batch.environment, mpid, at, batch.source_request_id, batch.body)
    )
    change = plan.users.get(mpid)
    if change is None and mpid not in known:
        change = plan.users[mpid] = UserChange(created_at=at, is_new=True)
        known.add(mpid)
    if not batch.counts_as_seen:
        if events:
            plan.other_events.append(
                (mpid, request.input_id, at, events, batch.environment, batch.historical)
            )
        return
    if change is None:
        change = plan.users[mpid] = UserChange(created_at=at, is_new=False)
    change.first_seen = at if change.first_seen is None else min(change.first_seen, at)
    change.last_seen = at if change.last_seen is None else max(change.last_seen, at)
    change.inputs.add(request.input_id)
    for name in batch.attributes_deleted:
        change.attributes_patch[name] = None
    change.attributes_patch.update(batch.attributes_set)
    if events:
        plan.events.append((mpid, request.input_id, at, events))
    mine = user_keys.setdefault(mpid, {})
    for id_type, (value, key) in batch.identities.items():
        owner = owners.get((id_type, key))
        if owner is not None and owner != mpid:
            continue  # an identity value stays with the profile that has it
        is_device = id_type in DEVICE_ID_TYPES
        if not is_device and mine.get(id_type) not in (None, key):
            old = mine[id_type]
            plan.released_identities.add((mpid, id_type))
            owners.pop((id_type, old), None)
            plan.identities.pop((id_type, old), None)
        owners[(id_type, key)] = mpid
        if not is_device:
            mine[id_type] = key
        plan.identities[(id_type, key)] = (mpid, value, is_device, at)
    for c in batch.consents:
        ts = c.ts if c.ts is not None else at
        ckey = (mpid, c.regulation, c.purpose)
        current = plan.consents.get(ckey)
        if current is None or (ts, at) >= (current[1], current[2]):
            plan.consents[ckey] = (c, ts, at)
    if batch.device is not None:
        plan.devices[(mpid, batch.device.device_key)] = (batch.device, at)
