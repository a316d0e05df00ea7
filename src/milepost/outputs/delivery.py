"""The delivery runner: one worker thread per connection, following the outbox (SPEC §6).

A supervisor thread re-reads the catalog every `poll_s` and hands each worker its connection and
output. A worker, for an active connection whose audience is calculated and settled, first
synchronises (removes for delivered users who are no longer members, then adds for members not
delivered: on a first activation that is the whole membership), then streams every later change of
the outbox in `seq` order, in batches. Only after the partner acknowledges a batch does its cursor
move, in the same transaction as the connection's counters and its record of what the partner
has; so delivery is at least once and in order per user. The worker is `worker.ConnectionWorker`.

A second thread follows the outbox head (`head_poll_s`, or at once on `notify()`), per audience,
while there is a connection (without one it sleeps until the supervisor starts a worker), and wakes
the workers behind their audience's head, so a change reaches its partner without waiting
for the catalog's next read, and a connection whose audience did not change reads nothing.
Once commits are notified, the head is read between notifications only every `poll_s`: the outbox's
writer notifies after each commit, and every read costs a query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import httpx

from milepost.catalog import Catalog
from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.clock import Clock
from milepost.engines.duckdb import DuckDBStore
from milepost.errors import NotFound
from milepost.outputs import state as st
from milepost.outputs.ack_writer import AckWriter
from milepost.outputs.identity_scan import IdentityScans
from milepost.outputs.live import prometheus
from milepost.outputs.names import AudienceNames
from milepost.outputs.outbox_tail import MAX_READ, OutboxTail, passed
from milepost.outputs.records import Change, Identities, outbox_change_id
from milepost.outputs.registry import OutputContext
from milepost.outputs.settings import DeliverySettings
from milepost.outputs.state import DeliveryStore
from milepost.outputs.worker import Assignment, ConnectionWorker
from milepost.priority import named_thread, run_in_background

log = logging.getLogger(__name__)

# The supervisor re-reads the outputs on every this many looks at the connections (or at once when a
# connection names one it has not read): their settings change rarely, and reading them decrypts
# every output's secrets, the larger part of a look. The connections' records are built again
# between those only when their stored rows changed (`Catalog.connections_token`, a plain query).
OUTPUTS_EVERY = 5


class DeliveryRunner:
    """Supervises one worker per connection; also answers delivery stats and resumes connections."""

    def __init__(
        self,
        catalog: Catalog,
        store: DuckDBStore,
        ready: Callable[[int], bool],
        clock: Clock,
        settings: DeliverySettings | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.ready = ready
        self.clock = clock
        self.settings = settings or DeliverySettings.from_env()
        self._own_http = http is None
        self.http = http or httpx.Client(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        self.context = OutputContext(self.http, clock, self.settings.allow_private)
        self._con = store.connect()  # used by the supervisor thread only (and here, before it starts)
        DeliveryStore.create_tables(self._con)
        self.head_seq = 0  # the outbox head: the greatest seq read
        self.heads: dict[int, int] = {}  # per audience, the greatest seq of its changes read
        self.workers: dict[int, ConnectionWorker] = {}
        self.tail = OutboxTail()  # the changes read with the head, for the workers
        self.scans = IdentityScans(self.settings.identity_scan_s)  # shared by the workers
        self.acks = AckWriter()  # the workers' acknowledgements, written together when they coincide
        self.names = AudienceNames(catalog.names_by_audience)  # the records' audience names, shared
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._changed = threading.Event()
        self._head_lock = threading.Lock()
        self._threads = False
        self._notified = False  # commits to the outbox are notified (see `_watch`)
        self._outputs: dict[int, OutputRecord] | None = None  # as the supervisor last read them
        # The connections as last read, with the token they were read after (re-read when it changes).
        self._connections: tuple[tuple[Any, ...], dict[int, ConnectionRecord]] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = True
        self._forget_orphans()
        self._thread = named_thread(self._supervise, "milepost-delivery")
        self._thread.start()
        self._watcher = named_thread(self._watch, "milepost-delivery-head")
        self._watcher.start()

    def notify(self) -> None:
        """Changes were just committed to the outbox: wake the workers behind them now rather than
        at the next look (for whoever writes the outbox, after its commit)."""
        self._notified = True
        self._changed.set()

    def _supervise(self) -> None:
        looks = 0
        while not self.stopping.is_set():
            try:
                self.tick(outputs=looks % OUTPUTS_EVERY == 0)
                looks += 1
            except Exception:
                log.exception("delivery supervision failed")
                looks = 0
            self.stopping.wait(self.settings.poll_s)

    def _watch(self) -> None:
        """Follow the outbox head closely (a cheap query: only rows after the last head are read)."""
        run_in_background()  # it reads the new changes and their users' identities for the workers
        con = self._con.cursor()
        try:
            while not self.stopping.is_set():
                # With no connection nobody follows the head: sleep until `tick` starts a worker.
                self._changed.wait(self.head_wait_s() if self.workers else None)
                self._changed.clear()
                if not self.workers:
                    continue
                try:
                    self._moved(self._head(con))
                except Exception:
                    log.exception("reading the outbox head failed")
        finally:
            con.close()

    def head_wait_s(self) -> float:
        """The longest wait before the head is read again: `head_poll_s` until a commit is
        notified; then `poll_s` (at least), a fallback for writes that are not notified."""
        s = self.settings
        return max(s.head_poll_s, s.poll_s) if self._notified else s.head_poll_s

    def _head(self, con: duckdb.DuckDBPyConnection) -> dict[int, int]:
        """Per audience, the greatest seq of its changes after the head read last; the changes
        themselves are kept for the workers (`outbox`) unless there are too many."""
        after = self.head_seq
        rows = con.execute(
            "SELECT seq, audience_id, mpid, action, changed_at FROM membership_changes WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            [after, MAX_READ + 1],
        ).fetchall()
        if len(rows) <= MAX_READ:
            changes: list[tuple[int, int, int, str, int]] = rows  # ints and str as DuckDB gives them
            self.tail.add(after, changes)
            # Their identities, for every connection's batches at once: only users of audiences
            # a connection follows (a worker asking for another's reads the store).
            followed = {w.audience_id() for w in list(self.workers.values())}
            users = sorted({m for _, a, m, _, _ in changes if a in followed})
            if users:
                self.tail.remember(changes[-1][0], DeliveryStore(con).identities(users))
            return {a: q for q, a, _, _, _ in changes}  # (in seq order: the last is the greatest)
        rows = con.execute(
            "SELECT audience_id, max(seq) FROM membership_changes WHERE seq > ? GROUP BY audience_id",
            [after],
        ).fetchall()
        heads = {int(a): int(s) for a, s in rows}
        self.tail.skip(max(heads.values()))
        return heads

    def identities(self, store: DeliveryStore, changes: Sequence[Change]) -> dict[int, Identities]:
        """The current identities of the users of changes without theirs: for changes read from the
        outbox, as read with the head after them (the identity scan follows later changes), else
        from the store."""
        unknown = [c for c in changes if c.identities is None]
        if not unknown:
            return {}
        if all(c.id == outbox_change_id(c.position) for c in unknown):
            kept = self.tail.identities([(c.mpid, c.position) for c in unknown])
            if kept is not None:
                return kept
        return store.identities([c.mpid for c in unknown])

    def outbox(
        self, store: DeliveryStore, audience_id: int, after_seq: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, int, str, int]]:
        """The audience's changes after `after_seq` (see `DeliveryStore.outbox`): from the changes
        read with the head when they are all kept, else from the store."""
        kept = self.tail.read(audience_id, after_seq, limit, upto)
        return store.outbox(audience_id, after_seq, limit, upto) if kept is None else kept

    def head_of(self, audience_id: int) -> int:
        """The greatest seq read of the audience's changes (0: none read)."""
        return self.heads.get(audience_id, 0)

    def _moved(self, heads: dict[int, int]) -> bool:
        """Record the heads read; wake the workers behind their audience's head when it moved (a
        connection whose audience did not change has nothing new to read)."""
        with self._head_lock:
            moved = {a: s for a, s in heads.items() if s > self.heads.get(a, 0)}
            if not moved:
                return False
            self.heads.update(moved)
            self.head_seq = max(self.head_seq, *moved.values())
        workers = list(self.workers.values())
        for worker in workers:
            audience = worker.audience_id()
            if audience is None or moved.get(audience, 0) > worker.state.cursor_seq:
                worker.wake.set()
        self.tail.drop(passed([(w.audience_id(), w.state.cursor_seq) for w in workers]))
        return True

    def close(self) -> None:
        self.stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(self.settings.stop_timeout_s)
        if self._watcher is not None:
            self._watcher.join(self.settings.stop_timeout_s)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for worker in list(self.workers.values()):
            worker.wake.set()
        for worker in list(self.workers.values()):
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._own_http:
            self.http.close()
        self._con.close()

    # ---- supervision -----------------------------------------------------------------------------

    def tick(self, outputs: bool = True) -> None:
        """Re-read the catalog and the outbox head; give every worker its connection; wake those behind.
        Without `outputs`, the outputs read last time stand, unless a connection names another."""
        token = self.catalog.connections_token()
        if outputs or self._connections is None or token != self._connections[0]:
            self._connections = (token, {c.id: c for c in self.catalog.connections()})
        connections = self._connections[1]
        known = self._outputs
        if outputs or known is None or any(c.output_id not in known for c in connections.values()):
            known = self._outputs = {o.id: o for o in self.catalog.list_outputs()}
        for cid, conn in connections.items():
            worker = self.workers.get(cid)
            if worker is None:
                worker = self.workers[cid] = ConnectionWorker(self, cid, self._con.cursor())
                if self._threads:
                    worker.start()
                self._changed.set()  # the watcher sleeps while there is no worker
            worker.assign(Assignment(conn, known.get(conn.output_id)))
        if self._watcher is None:  # else the watcher follows the head
            self._moved(self._head(self._con))
        for cid, worker in list(self.workers.items()):
            if worker.finished:
                del self.workers[cid]
            elif cid not in connections:
                current = worker._assignment
                if current is not None and not current.deleted:
                    worker.assign(Assignment(current.connection, current.output, deleted=True))

    def _forget_orphans(self) -> None:
        """Drop the state of connections deleted while Milepost was not running."""
        known = {c.id for c in self.catalog.connections()}
        rows = self._con.execute("SELECT connection_id FROM delivery_state").fetchall()
        store = DeliveryStore(self._con)
        for (cid,) in rows:
            if int(cid) not in known:
                store.forget(int(cid))

    # ---- for the API ---------------------------------------------------------------------------------

    def resume(self, connection_id: int) -> ConnectionRecord:
        """Resume a faulted connection: it retries its backlog at once."""
        record = self.catalog.set_connection_health(connection_id, "ok")
        worker = self.workers.get(connection_id)
        if worker is not None:
            # Its output as it is now: the fix may be in the output's settings, which the
            # supervisor re-reads only every few looks.
            self._outputs = None
            try:
                output: OutputRecord | None = self.catalog.get_output(record.output_id)
            except NotFound:
                output = None
            worker.resume(record, output)
        return record

    def stats(self, connection_id: int, audience_id: int) -> dict[str, Any]:
        return st.stats(self.store.reader(), connection_id, audience_id, self.clock.now_ms())

    def live(self, connection_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """The connection's recent messages and the partner's answers, newest first (kept in memory)."""
        worker = self.workers.get(connection_id)
        return [] if worker is None else worker.live.recent(limit)

    def metrics(self) -> list[str]:
        """Delivery figures per connection, in Prometheus text format."""
        con = self.store.reader()
        now = self.clock.now_ms()
        rows = [
            {
                "id": c.id,
                "audience_id": c.audience_id,
                "output": c.output_name,
                "type": c.output_type,
                "health": c.health,
                "stats": st.stats(con, c.id, c.audience_id, now),
            }
            for c in self.catalog.connections()
        ]
        return prometheus(rows)

    def dead_letters(self, connection_id: int, limit: int = 100) -> list[dict[str, Any]]:
        return st.dead_letters(self.store.reader(), connection_id, limit)
