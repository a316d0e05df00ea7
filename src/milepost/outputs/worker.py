"""One connection's delivery: a worker thread that synchronises the partner with the audience, then
follows the outbox (see `delivery` for the runner that supervises the workers).

A step does one unit of work and says how long to wait before the next: read the next batch of the
current phase, send it, and only once the partner acknowledged it move the cursor (with the
counters and what the partner has, in one transaction). What to do after each try is decided by
the pure `policy.decide`; a worker only sleeps, so a slow or failing partner delays nobody else.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.errors import MilepostError, NotFound
from milepost.outputs import registry
from milepost.outputs import state as st
from milepost.outputs.identity_changes import identity_changes
from milepost.outputs.identity_scan import IDENTITY_LAG_MS
from milepost.outputs.live import LiveLog
from milepost.outputs.policy import Attempt, Decision, Verdict, decide, split
from milepost.outputs.records import (
    Change,
    Identities,
    change_record,
    idempotency_key,
    identities_json,
    outbox_change_id,
    sent_form,
    sync_change_id,
)
from milepost.outputs.registry import (
    JsonOutput,
    Output,
    SubscribingOutput,
    Subscription,
    subscribes,
    takes_json,
)
from milepost.outputs.state import DeadLetter, DeliveryState, DeliveryStore
from milepost.outputs.sync_queue import JsonBatch
from milepost.priority import named_thread, run_in_background

if TYPE_CHECKING:
    from milepost.outputs.delivery import DeliveryRunner

log = logging.getLogger(__name__)

IDENTITY_SCAN_LIMIT = 2_000
MIN_MPID = -(2**63)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the supervisor last saw of a connection; `deleted` once it is gone from the catalog."""

    connection: ConnectionRecord
    output: OutputRecord | None
    deleted: bool = False


class ConnectionWorker:
    """Delivers one connection. `step` does one unit of work and says how long to wait before the next."""

    def __init__(self, runner: DeliveryRunner, connection_id: int, con: duckdb.DuckDBPyConnection) -> None:
        self.runner = runner
        self.id = connection_id
        self.store = DeliveryStore(con, runner.acks)
        self.sync = self.store.sync
        self.state: DeliveryState = self.store.load(connection_id)
        self.wake = threading.Event()
        self.finished = False
        self._assignment: Assignment | None = None
        self._lock = threading.Lock()
        self._parts: list[list[Change] | JsonBatch] = []  # the unacknowledged batch, possibly split, in order
        self._failures = 0
        self._redundant = 0  # changes of the current part that the partner already reflects
        self._retry_at = 0.0  # monotonic time before which the unacknowledged batch is not retried
        self._sender: tuple[tuple[int, int, str], Output] | None = None
        self._health: str | None = None  # what this worker last set (or found) in the catalog
        self._paused = False  # faulted: nothing is sent until the connection is resumed
        self._resumed = False
        self._thread: threading.Thread | None = None
        self._random = random.Random()
        self.live = LiveLog()
        self._verified_at: int | None = None  # clock ms of the last good answer (Firehose verification)
        self._identity_scan_at = 0.0
        self._identity_mark: tuple[int, int] | None = None  # where the identity scan moves once acknowledged
        self._ahead: JsonBatch | None = None  # the next synchronisation batch, read while the partner had one
        self._pool: ThreadPoolExecutor | None = None  # sends a JSON batch while the next one is read

    # ---- control -------------------------------------------------------------------------------

    def assign(self, assignment: Assignment) -> None:
        with self._lock:
            before = self._assignment
            self._assignment = assignment
            if before is None:
                self._health = assignment.connection.health
        if before is None or before != assignment:
            self.wake.set()

    def audience_id(self) -> int | None:
        """The audience of the connection as last assigned (None before the first assignment)."""
        assignment = self._assignment
        return None if assignment is None else assignment.connection.audience_id

    def resume(self, record: ConnectionRecord, output: OutputRecord | None = None) -> None:
        """Resume with `record`, and `output` when given (else the output last assigned)."""
        with self._lock:
            current = self._assignment
            if output is None and current is not None:
                output = current.output
            self._assignment = Assignment(record, output)
            self._resumed = True
        self.wake.set()

    def start(self) -> None:
        self._thread = named_thread(self._run, f"milepost-delivery-{self.id}")
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        run_in_background()
        errors = 0
        try:
            while not self.runner.stopping.is_set() and not self.finished:
                try:
                    wait = self.step()
                    since, delay = self.store.pending_since(), self.runner.settings.ack_delay_s
                    if since is not None:  # wake to write the acknowledgement if no batch follows
                        wait = min(wait, max(0.0, since + delay - time.monotonic()))
                    errors = 0
                except Exception as error:
                    errors += 1
                    if errors == 1 or errors % 100 == 0:
                        log.exception("delivery of connection %s failed", self.id)
                    self.state.last_error = f"internal error: {error}"
                    self._parts.clear()
                    self._identity_mark = None
                    self._ahead = None
                    self.store.discard_pending(self.id)  # sent again, as after a crash
                    self.state = self._reload()
                    wait = min(30.0, self.runner.settings.poll_s * 2**errors)
                if wait > 0 and not self.finished:
                    self.wake.wait(wait)
                    self.wake.clear()
        finally:
            try:
                self.store.flush()
            except Exception:
                log.exception("recording the last acknowledgement of connection %s failed", self.id)
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self.store.close()

    def _reload(self) -> DeliveryState:
        try:
            return self.store.load(self.id)
        except Exception:
            return self.state

    # ---- one step ----------------------------------------------------------------------------------

    def step(self) -> float:
        """Do the next piece of work; return seconds to wait (0: go on at once)."""
        with self._lock:
            assignment = self._assignment
            resumed, self._resumed = self._resumed, False
        since = self.store.pending_since()
        if since is not None and time.monotonic() - since >= self.runner.settings.ack_delay_s:
            self.store.flush()  # no batch followed in time: the acknowledgement is written alone
        poll = self.runner.settings.poll_s
        if assignment is None:
            return poll
        conn, s = assignment.connection, self.state
        if resumed:
            self._paused, self._health, self._failures, s.failing_since = False, "ok", 0, None
            self._retry_at = 0.0
            self._sender = None  # settings may have been fixed
            if s.phase == st.SYNC_ADD:
                self._parts.clear()  # re-read with the identities the fixed settings accept
                self._ahead = None
            self.store.save(s)
        if self._paused or conn.health == "faulted":
            if assignment.deleted:  # a paused partner gets nothing more; forget the connection
                self.store.forget(self.id)
                self.finished = True
                return 0
            return poll  # paused until resumed; the backlog stays in the outbox
        if assignment.deleted:
            if conn.on_deactivate == "remove_members" and s.phase not in (st.NEW, st.INACTIVE):
                if s.phase != st.DRAIN:
                    self._begin(st.DRAIN)
                return self._advance(assignment)
            return self._finish_deleted(assignment)
        if conn.status != "active":
            if s.phase in (st.NEW, st.INACTIVE):
                return poll
            if conn.on_deactivate == "remove_members":
                if s.phase != st.DRAIN:
                    self._begin(st.DRAIN)
                return self._advance(assignment)
            self._parts.clear()
            s.phase = st.INACTIVE
            self.store.save(s)
            return poll
        if s.phase in (st.NEW, st.INACTIVE, st.DRAIN):
            if not self.runner.ready(conn.audience_id):
                return poll
            # Changes up to the outbox head are reflected in the membership read from now on.
            self._begin(st.SYNC_REMOVE, cursor_seq=self.store.head_seq())
        wait = self._subscription_step(assignment)
        if wait is not None:
            return wait
        return self._advance(assignment)

    def _begin(self, phase: str, cursor_seq: int | None = None) -> None:
        s = self.state
        self._parts.clear()
        self._identity_mark = None
        self._ahead = None
        self._retry_at = 0.0
        s.phase, s.epoch, s.sync_after = phase, s.epoch + 1, None
        if cursor_seq is not None:
            s.cursor_seq = cursor_seq
        if phase == st.SYNC_REMOVE:  # the synchronisation reads current identities
            s.identities_at, s.identities_mpid = self.runner.clock.now_ms() - IDENTITY_LAG_MS, MIN_MPID
        self.store.save(s)

    def _advance(self, assignment: Assignment) -> float:
        if not self._parts:
            batch = self._next_batch(assignment)
            if batch is None:
                return 0  # moved to the next phase
            if not batch:
                return self._idle(assignment)
            self._parts = [batch]
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            return wait  # backing off (other wake-ups do not cut a wait the partner asked for)
        return self._send(assignment)

    def _batch_size(self, assignment: Assignment) -> int:
        try:
            sender = self._sender_for(assignment)
        except MilepostError:
            sender = None
        return sender.batch_size if sender is not None else self.runner.settings.batch_size

    def _next_batch(self, assignment: Assignment) -> list[Change] | JsonBatch | None:
        """The next batch of the current phase; [] when there is nothing yet, None after a phase change."""
        s, conn = self.state, assignment.connection
        size = self._batch_size(assignment)
        now = self.runner.clock.now_ms()
        aid = conn.audience_id
        upto = s.inflight_to  # after a restart: the batch that was not acknowledged, as it was
        s.inflight_to = None
        if s.phase == st.STREAM:
            rows = (
                self.runner.outbox(self.store, aid, s.cursor_seq, size, upto)
                if self.runner.head_of(aid) > s.cursor_seq
                else []
            )
            if not rows:
                return self._identity_batch(assignment, size)
            return self._held([Change(outbox_change_id(q), aid, m, a, t, q) for q, m, a, t in rows], upto)
        if s.phase == st.SYNC_REMOVE:
            stale = self.store.stale(self.id, aid, s.sync_after, size, upto)
            if stale:
                return self._held(
                    [
                        Change(sync_change_id("r", self.id, s.epoch, m), aid, m, "remove", now, m)
                        for m in stale
                    ],
                    upto,
                )
            if upto is not None:
                return None  # the held batch is gone (its users changed): go on from here
            self.store.queue_sync(self.id, aid, s.epoch)
            s.phase, s.sync_after = st.SYNC_ADD, None
        elif s.phase == st.SYNC_ADD:
            # The queue was taken once, so a batch re-read after a crash is the same batch.
            queued = self._sync_batch(assignment, size)
            if queued:
                return queued
            if s.sync_after is None and self.store.missing(self.id, aid, None, 1):
                # Members joined as the (empty) queue was taken, or it was lost: take it again.
                self.store.queue_sync(self.id, aid, s.epoch)
                s.sync_after = None
            else:
                self.store.unqueue(self.id)
                s.phase, s.sync_after = st.STREAM, None
        elif s.phase == st.DRAIN:
            left = self.store.delivered_after(self.id, s.sync_after, size, upto)
            if left:
                return self._held(
                    [
                        Change(sync_change_id("d", self.id, s.epoch, m), aid, m, "remove", now, m)
                        for m in left
                    ],
                    upto,
                )
            if upto is not None:
                return None
            s.phase, s.sync_after = st.INACTIVE, None  # deleted: finished on the next step
        else:
            return []
        self.store.save(s)
        return None

    def _sync_batch(self, assignment: Assignment, size: int) -> list[Change] | JsonBatch | None:
        """The next synchronisation adds: written as JSON by the store for an output that takes it."""
        s, aid, output = self.state, assignment.connection.audience_id, assignment.output
        accepted = None if output is None else self._accepted(output)
        hashing = None if output is None else output.hashing
        try:
            sender = self._sender_for(assignment)
        except MilepostError:
            sender = None
        if hashing is None and takes_json(sender):
            ahead, self._ahead = self._ahead, None
            if ahead is not None and (ahead.epoch, ahead.after, ahead.limit, ahead.accepted) == (
                s.epoch,
                s.sync_after,
                size,
                None if accepted is None else tuple(accepted),
            ):
                return ahead
            names = self._names_of(aid)
            return self.sync.read_json(self.id, aid, s.epoch, s.sync_after, size, accepted, names)
        return self.sync.changes(self.id, aid, s.epoch, s.sync_after, size, accepted, hashing) or None

    def _as_changes(self, batch: JsonBatch, assignment: Assignment) -> list[Change]:
        output = assignment.output
        return self.sync.changes(
            self.id,
            assignment.connection.audience_id,
            batch.epoch,
            batch.after,
            batch.count,
            batch.accepted,
            None if output is None else output.hashing,
            upto=batch.last,
        )

    def _held(self, batch: list[Change], before: int | None) -> list[Change]:
        """Remember where the batch ends before it is sent, so a crash re-sends exactly this batch."""
        s = self.state
        s.inflight_to = batch[-1].position
        if s.inflight_to != before:
            self.store.save(s)
        return batch

    # ---- sending -------------------------------------------------------------------------------------

    def _sender_for(self, assignment: Assignment) -> Output | None:
        output, conn = assignment.output, assignment.connection
        if output is None:
            return None
        key = (output.id, output.updated_at, repr(sorted(conn.settings.items())))
        if self._sender is not None and self._sender[0] == key:
            return self._sender[1]
        kind = registry.output_type(output.type)
        if kind is None:
            return None
        sender = kind.open(output, conn, self.runner.context)
        self._sender = (key, sender)
        return sender

    def _names_of(self, audience_id: int) -> tuple[str, str]:
        return self.runner.names.of(audience_id)

    def _send(self, assignment: Assignment) -> float:
        s, conn, output = self.state, assignment.connection, assignment.output
        poll = self.runner.settings.poll_s
        if output is None:
            return poll
        try:
            sender = self._sender_for(assignment)
        except MilepostError as error:
            return self._fault(f"the output's settings cannot work: {error.message}")
        if sender is None:
            s.last_error = (
                f"output type {output.type!r} cannot deliver yet (no such output type is registered)"
            )
            return poll
        head = self._parts[0]
        if isinstance(head, JsonBatch):
            if output.hashing is None and takes_json(sender):
                return self._send_json(assignment, sender, head)
            head = self._parts[0] = self._as_changes(head, assignment)  # the output changed
        part = head
        accepted = self._accepted(output)
        identities = self.runner.identities(self.store, part)
        audience_name, external_name = self._names_of(conn.audience_id)
        # While streaming, a change the partner already reflects (an add of a user it has, a
        # remove of one it does not) is redundant: a synchronisation sent the same state already.
        has = self.store.delivered_among(self.id, [c.mpid for c in part]) if s.phase == st.STREAM else None
        sendable: list[tuple[Change, dict[str, Any]]] = []
        redundant = 0
        for change in part:
            if has is not None and (change.action == "add") == (change.mpid in has):
                redundant += 1
                continue
            if change.identities is not None:  # the identities the partner was given before
                ids = change.identities
            else:
                ids = identities.get(change.mpid, Identities()).only(accepted, output.hashing)
            if accepted is not None and not ids:
                if has is not None and change.action == "remove":
                    has.discard(change.mpid)
                continue  # none of the identities the partner accepts: ineligible
            if has is not None:
                (has.add if change.action == "add" else has.discard)(change.mpid)
            sendable.append((change, change_record(change, audience_name, external_name, ids)))
        self._redundant = redundant
        now = self.runner.clock.now_ms()
        if not sendable:
            self._acknowledged(part, [], [], now)
            return 0
        records = [r for _, r in sendable]
        key = idempotency_key([r["id"] for r in records])
        attempt = sender.send(records, key)
        now, failures, decision = self._attempted("changes", attempt, records, key)
        then = self._after(decision, failures, now, lambda: self._acknowledged(part, sendable, [], now))
        if then is not None:
            return then
        # SPLIT: the partner refuses something in this batch.
        if len(part) > 1:
            first, second = split(part)
            self._redundant = 0
            self._parts[0:1] = [first, second]
            return 0
        dead = [(part[0], DeadLetter(records[0], attempt.status, attempt.body[:2000]))]
        self._acknowledged(part, [], dead, now)
        return 0

    def _send_json(self, assignment: Assignment, sender: JsonOutput, batch: JsonBatch) -> float:
        """Send a batch of synchronisation adds written as JSON; what follows is as for `_send`."""
        now = self.runner.clock.now_ms()
        if not batch.eligible:
            self._acknowledged_json(batch, now)
            return 0
        attempt = self._send_reading_ahead(assignment, sender, batch)
        sample = [{"id": batch.change_id(self.id, m), "mpid": m, "action": "add"} for m in batch.sample]
        now, failures, decision = self._attempted(
            "changes", attempt, key=batch.key, summary=(batch.eligible, batch.eligible, sample)
        )
        if decision.verdict is not Verdict.DELIVERED:
            self._ahead = None  # read again once this batch is through
        then = self._after(decision, failures, now, lambda: self._acknowledged_json(batch, now))
        if then is not None:
            return then
        # SPLIT: the partner refuses something in this batch; halve it as records.
        part = self._as_changes(batch, assignment)
        self._redundant = 0
        if len(part) > 1:
            self._parts[0:1] = list(split(part))
            return 0
        audience_name, external_name = self._names_of(assignment.connection.audience_id)
        record = change_record(part[0], audience_name, external_name, part[0].identities or Identities())
        self._parts[0] = part
        self._acknowledged(
            part, [], [(part[0], DeadLetter(record, attempt.status, attempt.body[:2000]))], now
        )
        return 0

    def _after(
        self, decision: Decision, failures: int, now: int, acknowledge: Callable[[], None]
    ) -> float | None:
        """What follows a try of a batch of changes: the wait before the next step, or None when the
        partner refused part of the batch (the caller splits it)."""
        if decision.verdict is Verdict.DELIVERED:
            acknowledge()
            self._set_health("ok")
            self._verified_at = now
            return 0
        if decision.verdict is Verdict.RETRY:
            return self._retry(decision, failures, now)
        if decision.verdict is Verdict.FAULT:
            return self._fault(decision.reason)
        self._failures = 0
        self.state.last_error = decision.reason
        return None

    def _send_reading_ahead(self, assignment: Assignment, sender: JsonOutput, batch: JsonBatch) -> Attempt:
        """Send the batch; while the partner has it, read the next one (the store's work then
        overlaps the partner's instead of following it)."""
        if batch.count < batch.limit:  # the last batch
            return sender.send_json(batch.records, batch.key)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"milepost-delivery-{self.id}-send")
        sending = self._pool.submit(sender.send_json, batch.records, batch.key)
        try:
            aid = assignment.connection.audience_id
            self._ahead = self.sync.read_json(
                self.id, aid, batch.epoch, batch.last, batch.limit, batch.accepted, self._names_of(aid), batch
            )
        except Exception:
            self._ahead = None
            log.debug("reading the next batch of connection %s ahead failed", self.id, exc_info=True)
        return sending.result()

    def _acknowledged_json(self, batch: JsonBatch, now: int) -> None:
        """The partner has every eligible member of a JSON batch of synchronisation adds."""
        s = self.state
        s.sync_after = batch.last
        s.sent += batch.eligible
        s.ineligible += batch.count - batch.eligible
        if batch.eligible:
            s.last_success_at = now
            s.failing_since = None
        self._failures = 0
        if len(self._parts) == 1:
            s.inflight_to = None
        self.store.commit(s, synced=batch if batch.eligible else None, now_ms=now)
        self._parts.pop(0)

    def _acknowledged(
        self,
        part: list[Change],
        sent: Sequence[tuple[Change, dict[str, Any]]],
        dead: list[tuple[Change, DeadLetter]],
        now: int,
    ) -> None:
        """The partner has `sent`; it refused `dead`; the rest of `part` was ineligible. Move on."""
        s = self.state
        delivered = {id(c): r for c, r in sent}
        refused = {id(c) for c, _ in dead}
        final: dict[int, str] = {}  # what the partner has of each user after this part
        forms: dict[int, str | None] = {}  # the identities each user was last sent with
        for change in part:
            if id(change) in delivered:
                final[change.mpid] = change.action
                forms[change.mpid] = identities_json(delivered[id(change)])
            elif id(change) not in refused and change.action == "remove":
                final[change.mpid] = "remove"  # ineligible now: not the partner's any more either
        if s.phase == st.STREAM:
            s.cursor_seq = max(s.cursor_seq, part[-1].position)
        else:
            s.sync_after = part[-1].position
        s.sent += len(sent)
        s.failed += len(dead)
        s.ineligible += len(part) - len(sent) - len(dead) - self._redundant
        if sent:
            s.last_success_at = now
            s.failing_since = None
        self._failures = 0
        added = {m: forms.get(m) for m, a in final.items() if a == "add"}
        removed = [m for m, a in final.items() if a == "remove"]
        if s.phase == st.DRAIN:  # given up or not, a drained user is no longer ours to remove
            removed = sorted({c.mpid for c in part})
            added = {}
        if len(self._parts) == 1:
            s.inflight_to = None
            if self._identity_mark is not None:
                s.identities_at, s.identities_mpid = self._identity_mark
                self._identity_mark = None
        defer = s.phase == st.STREAM and self.runner.settings.ack_delay_s > 0  # see DeliveryStore.commit
        self.store.commit(s, added=added, removed=removed, dead=[d for _, d in dead], now_ms=now, defer=defer)
        self._parts.pop(0)

    def _retry(self, decision: Decision, failures: int, now: int) -> float:
        s = self.state
        self._failures = failures
        if s.failing_since is None:
            s.failing_since = now
        s.last_error = decision.reason
        self.store.save(s)
        self._set_health("retrying")
        self._retry_at = time.monotonic() + decision.delay_s
        return decision.delay_s

    def _accepted(self, output: OutputRecord) -> tuple[str, ...] | None:
        if output.accepted_identities is not None:
            return output.accepted_identities
        return registry.default_identities(registry.output_type(output.type), output.settings)

    # ---- partners that keep subscriptions (Firehose) ----------------------------------------------------

    def _attempted(
        self,
        kind: str,
        attempt: Attempt,
        records: list[dict[str, Any]] | None = None,
        key: str | None = None,
        summary: tuple[int, int, list[dict[str, Any]]] | None = None,
    ) -> tuple[int, int, Decision]:
        """Record an attempt (state, live view) and decide what follows: (now, failures, decision).
        `summary` stands for `records` not at hand: (count, adds, the first few)."""
        now = self.runner.clock.now_ms()
        self.state.last_attempt_at = now
        if summary is not None:
            self.live.add_summary(kind, now, attempt, *summary, key)
        else:
            self.live.add(kind, now, attempt, records or (), key)
        failures = 0 if attempt.ok else self._failures + 1
        decision = decide(
            attempt,
            failures=failures,
            failing_since_ms=self.state.failing_since,
            now_ms=now,
            policy=self.runner.settings.policy,
            jitter=self._random.random(),
        )
        return now, failures, decision

    def _lifecycle(self, kind: str, send: Callable[[], Attempt]) -> float | None:
        """Send a subscription or verification message; None once the partner accepted it, else the
        wait before the next step (a retry's backoff, or paused when it faulted)."""
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            return wait
        attempt = send()
        s = self.state
        now, failures, decision = self._attempted(kind, attempt)
        if decision.verdict is Verdict.DELIVERED:
            self._failures, self._retry_at, s.failing_since = 0, 0.0, None
            self._verified_at = now
            self._set_health("ok")
            return None
        if decision.verdict is Verdict.RETRY:
            return self._retry(decision, failures, now)
        # A refused subscription or verification cannot be split: the partner refuses the connection.
        return self._fault(f"{kind}: {decision.reason}")

    def _subscribing(self, assignment: Assignment) -> SubscribingOutput | None:
        sender = self._sender_for(assignment)
        return sender if subscribes(sender) else None

    def _subscription_step(self, assignment: Assignment) -> float | None:
        """Tell a subscribing partner about the connection (add) or a change to it (update: its
        settings, the audience's external name) before any membership change; None when it knows."""
        try:
            sender = self._subscribing(assignment)
        except MilepostError as error:
            return self._fault(f"the output's settings cannot work: {error.message}")
        if sender is None:
            return None
        conn, s = assignment.connection, self.state
        _, external_name = self._names_of(conn.audience_id)
        wanted = json.dumps({"name": external_name, "settings": conn.settings}, sort_keys=True)
        if s.subscribed == wanted:
            return None
        before = json.loads(s.subscribed) if s.subscribed else None
        subscription = Subscription(
            "add" if before is None else "update",
            conn.audience_id,
            external_name,
            conn.settings,
            None if before is None else before["settings"],
        )
        wait = self._lifecycle(f"subscription {subscription.action}", lambda: sender.subscribe(subscription))
        if wait is not None:
            return wait
        s.subscribed = wanted
        self.store.save(s)
        return 0

    def _finish_deleted(self, assignment: Assignment) -> float:
        """A deleted connection: a subscribing partner is told (remove), then its state is forgotten."""
        s = self.state
        if s.subscribed is not None and not self._paused and assignment.connection.health != "faulted":
            try:
                sender = self._subscribing(assignment)
            except MilepostError:
                sender = None
            if sender is not None:
                conn = assignment.connection
                _, external_name = self._names_of(conn.audience_id)
                removal = Subscription("remove", conn.audience_id, external_name, conn.settings)
                wait = self._lifecycle("subscription remove", lambda: sender.subscribe(removal))
                if wait is not None and not self._paused:
                    return wait
        self.store.forget(self.id)
        self.finished = True
        return 0

    def _idle(self, assignment: Assignment) -> float:
        """Nothing to send: a subscribing partner is verified when its interval has passed; any other
        sleeps until its next identity scan rather than polling (about 200 wakes a second fewer at
        50 idle connections)."""
        poll = self.runner.settings.poll_s
        if self.state.phase != st.STREAM:
            return poll
        try:
            sender = self._subscribing(assignment)
        except MilepostError:
            return poll
        if sender is None:  # only the identity scan falls due: a moved head or catalog change wakes it
            return max(poll, self._identity_scan_at + self.runner.settings.identity_scan_s - time.monotonic())
        now = self.runner.clock.now_ms()
        if self._verified_at is None:
            self._verified_at = now
        if now - self._verified_at < sender.verify_interval_s * 1000:
            return poll
        wait = self._lifecycle("verification", sender.verify)
        return poll if wait is None else wait

    # ---- identity changes --------------------------------------------------------------------------------

    def _identity_batch(self, assignment: Assignment, size: int) -> list[Change] | None:
        """Removes (old identities) and adds (new) for members whose identities changed; [] when
        there are none, None to look again at once."""
        now_s = time.monotonic()
        if now_s - self._identity_scan_at < self.runner.settings.identity_scan_s:
            return []
        self._identity_scan_at = now_s
        s, conn, output = self.state, assignment.connection, assignment.output
        if output is None:
            return []
        now = self.runner.clock.now_ms()
        after = (
            s.identities_at if s.identities_at is not None else now - IDENTITY_LAG_MS,
            s.identities_mpid if s.identities_mpid is not None else MIN_MPID,
        )
        upto = self.runner.scans.upto(now)
        if upto <= after[0] and s.identities_at is not None:
            return []
        limit = max(1, min(IDENTITY_SCAN_LIMIT, size // 2))
        touched = self.runner.scans.touched(self.store, after, upto, limit)
        full = len(touched) == limit  # more may follow the last one found: look again at once
        mark = (touched[-1][1], touched[-1][0]) if full else (upto, MIN_MPID)
        candidates = self.store.identity_candidates(self.id, conn.audience_id, touched)
        mpids = [m for m, _ in candidates]
        accepted = self._accepted(output)
        current = {m: ids.only(accepted, output.hashing) for m, ids in self.store.identities(mpids).items()}
        changes = identity_changes(
            self.id,
            conn.audience_id,
            candidates,
            self.store.delivered_identities(self.id, mpids),
            self.store.members_among(conn.audience_id, mpids),
            current,
            {m: sent_form(ids) for m, ids in current.items()},
            s.cursor_seq,
            now,
        )
        if not changes:
            s.identities_at, s.identities_mpid = mark
            if candidates and self.store.pending_since() is None:  # else the next commit stores it
                self.store.save(s)  # (a crash only re-scans)
            return None if full else []
        self._identity_mark = mark
        return changes

    def _fault(self, reason: str) -> float:
        s = self.state
        s.last_error = reason
        if s.failing_since is None:
            s.failing_since = self.runner.clock.now_ms()
        self.store.save(s)
        self._paused = True
        self._set_health("faulted")
        log.warning("connection %s faulted: %s", self.id, reason)
        return self.runner.settings.poll_s

    def _set_health(self, health: str) -> None:
        if self._health == health:
            return
        try:
            self.runner.catalog.set_connection_health(self.id, health)
        except NotFound:
            return
        except MilepostError:
            return  # a concurrent catalog change: set it on the next batch
        self._health = health
