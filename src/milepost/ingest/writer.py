"""The group-commit writer: one thread owns the store's write connection.

Requests queue up while a commit runs; the next commit takes them all, so the number of durable
commits per second stays small however many requests arrive. A request's future resolves only
after its commit, which is what lets the Events API answer 202 only for durable data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import duckdb

from milepost.engines.base import Store
from milepost.errors import EngineError, Unavailable
from milepost.ingest.plan import CommitPlan, DedupeWindows, build_plan
from milepost.model.batch import IngestOutcome, IngestRequest
from milepost.priority import named_thread

log = logging.getLogger(__name__)

CommitListener = Callable[[CommitPlan], None]
SWITCH_INTERVAL_S = 0.0005
# The windows are account settings read from the catalog; a query per commit was a visible share of
# a commit's fixed cost, and a change of the settings may take this long to apply.
WINDOWS_TTL_S = 1.0
# How long a commit may wait for the requests its submitters' event loop is still preparing.
CATCH_UP_S = 0.005
# How long a commit smaller than the last may wait for more requests. Under steady load the clients
# answered by one commit send their next requests while the next runs, and the groups settled into
# pairs like 15 + 1 of 16 connections: a commit's fixed cost for a single request. Waiting for the
# answered clients to come back makes one group of them (measured for 100-event requests over 16
# connections: 9 -> 15 requests per commit, a quarter less server CPU per event). A lone request
# after a lone request does not wait; the first one after a burst waits at most this once.
REGROUP_S = 0.015


@dataclass
class _Item:
    request: IngestRequest
    # A future of the submitter's event loop (`accept`), settled on that loop, or a thread-safe one.
    future: Future[IngestOutcome] | asyncio.Future[IngestOutcome]

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The submitter's event loop, if it has one."""
        return self.future.get_loop() if isinstance(self.future, asyncio.Future) else None


@dataclass
class _Task:
    """Work that must run on the writer thread (it owns the write connection)."""

    fn: Callable[[], object]
    future: Future[object]


class IngestWriter:
    def __init__(
        self,
        store: Store,
        windows: Callable[[], DedupeWindows],
        *,
        max_group_batches: int = 5_000,
        catch_up_s: float = CATCH_UP_S,
        regroup_s: float = REGROUP_S,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.windows = windows
        self.max_group_batches = max_group_batches
        self.catch_up_s = catch_up_s
        self.regroup_s = regroup_s
        self.listeners: list[CommitListener] = []
        self._queue: queue.Queue[_Item | _Task | None] = queue.Queue()
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._thread = named_thread(self._run, "milepost-writer")
        self._closing = False
        self._windows: tuple[float, DedupeWindows] | None = None
        self.commits = 0
        self._last_group = 0  # requests in the last commit
        self.last_error: str | None = None

    def start(self) -> None:
        # The writer hands the GIL to DuckDB and back several times per commit; with the default 5 ms
        # switch interval each hand-back waits out the event loop's time slice (measured: commits
        # 2-4x slower under load). A shorter interval keeps the writer's wait short.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop; later submissions get 503."""
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, request: IngestRequest) -> Future[IngestOutcome]:
        """Queue `request` from a thread without an event loop; the future holds its outcome."""
        if self._closing:
            raise Unavailable("the server is shutting down; retry shortly", retry_after_s=5)
        fut: Future[IngestOutcome] = Future()
        self._queue.put(_Item(request, fut))
        return fut

    async def accept(self, request: IngestRequest) -> IngestOutcome:
        """Queue `request` from a task of the running event loop and await its commit. The writer
        lets that loop catch up before committing (more of its requests join), and settles the
        futures of one commit's requests in one call into the loop, not a thread-safe hand-over each."""
        if self._closing:
            raise Unavailable("the server is shutting down; retry shortly", retry_after_s=5)
        fut: asyncio.Future[IngestOutcome] = asyncio.get_running_loop().create_future()
        self._queue.put(_Item(request, fut))
        return await fut

    def run_exclusive(self, fn: Callable[[], object], timeout: float | None = None) -> object:
        """Run `fn` on the writer thread between commits and return its result."""
        fut: Future[object] = Future()
        self._queue.put(_Task(fn, fut))
        return fut.result(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if isinstance(first, _Task):
                self._run_task(first)
                continue
            group = [first]
            size = len(first.request.batches)
            deadline = regroup_deadline = None
            stop = False
            while size < self.max_group_batches:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    # A busy server has more requests read and waiting for the event loop to validate
                    # them: one commit with them costs far less than a commit each (its statements'
                    # fixed cost). An idle loop answers at once, so a lone request does not wait.
                    loop = group[-1].loop if group else None
                    if loop is None:
                        break
                    if deadline is None:
                        deadline = time.monotonic() + self.catch_up_s
                    if time.monotonic() < deadline and _catch_up(loop, deadline) and not self._queue.empty():
                        continue
                    if len(group) >= self._last_group or self.regroup_s <= 0:
                        break  # as large as the last: commit now
                    if regroup_deadline is None:
                        regroup_deadline = time.monotonic() + self.regroup_s
                    try:
                        nxt = self._queue.get(timeout=max(0.0, regroup_deadline - time.monotonic()))
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Task):
                    self._commit(group)
                    group, size = [], 0
                    self._run_task(nxt)
                    continue
                group.append(nxt)
                size += len(nxt.request.batches)
            self._last_group = len(group)
            if group:
                self._commit(group)
            if stop:
                return

    @staticmethod
    def _run_task(task: _Task) -> None:
        try:
            task.future.set_result(task.fn())
        except Exception as exc:
            task.future.set_exception(exc)

    def _current_windows(self) -> DedupeWindows:
        now = time.monotonic()
        if self._windows is None or now - self._windows[0] >= WINDOWS_TTL_S:
            self._windows = (now, self.windows())
        return self._windows[1]

    def _commit(self, group: list[_Item]) -> None:
        try:
            plan = build_plan([i.request for i in group], self.store, self._current_windows(), self._rng)
            self.store.apply(plan)
        except (duckdb.IOException, OSError) as exc:
            self.last_error = str(exc)
            log.error("store write failed: %s", type(exc).__name__)
            unavailable = Unavailable("the store cannot accept data right now; retry later")
            _settle(group, [unavailable] * len(group))
            return
        except Exception as exc:
            if len(group) > 1:  # isolate the request that broke the commit; the others still land
                for item in group:
                    self._commit([item])
                return
            self.last_error = str(exc)
            log.exception("commit failed")
            _settle(group, [EngineError(f"the store refused the data: {type(exc).__name__}")])
            return
        self.commits += 1
        _settle(group, plan.outcomes)
        for listener in self.listeners:
            try:
                listener(plan)
            except Exception:
                log.exception("commit listener failed")


_Settling = tuple[asyncio.Future[IngestOutcome], IngestOutcome | Exception]  # a future, what it gets


def _settle(group: list[_Item], results: Sequence[IngestOutcome | Exception]) -> None:
    """Resolve each item's future with its outcome or exception; those of an event loop's futures
    in one call on that loop."""
    on_loops: dict[asyncio.AbstractEventLoop, list[_Settling]] = {}
    for item, result in zip(group, results, strict=True):
        fut = item.future
        if isinstance(fut, asyncio.Future):
            on_loops.setdefault(fut.get_loop(), []).append((fut, result))
        else:
            with contextlib.suppress(InvalidStateError):  # cancelled by its caller: nobody waits
                _resolve(fut, result)
    for loop, pairs in on_loops.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits them
            loop.call_soon_threadsafe(_settle_on_loop, pairs)


def _settle_on_loop(pairs: list[_Settling]) -> None:
    for fut, result in pairs:
        if not fut.done():  # else cancelled: its client went away (the request was committed all the same)
            _resolve(fut, result)


def _resolve(
    fut: Future[IngestOutcome] | asyncio.Future[IngestOutcome], result: IngestOutcome | Exception
) -> None:
    if isinstance(result, Exception):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _catch_up(loop: asyncio.AbstractEventLoop, deadline: float) -> bool:
    """Wait until `loop` has run what it had ready, and the tasks that started, until `deadline`.

    Two hops: the first runs after the callbacks ready now (reads of new requests among them), the
    second after the request tasks those started, which submit without waiting once their body is in.
    """
    done = threading.Event()
    try:
        loop.call_soon_threadsafe(loop.call_soon, done.set)
    except RuntimeError:  # the loop is closed
        return False
    return done.wait(max(0.0, deadline - time.monotonic()))
