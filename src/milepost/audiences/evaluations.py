"""What the audience engine's evaluations did and how late they were: the operators' view of it.

The server notes each evaluation of its evaluator thread (real-time steps, and the first
calculations and the recovery after a start) once it has committed: when it ran, when its changes
were recorded, which rows of the change log it wrote, and how long its batches and due timers
waited.
The recent ones are listed by the API (`GET /api/v1/evaluations`); the totals and histograms go
to `/metrics` (SPEC §7: evaluation lag, timer backlog and lateness).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from milepost.audiences.engine import EvalResult
from milepost.metrics import WAIT_BUCKETS, Latencies
from milepost.priority import ThreadTimes

KEEP = 1_000  # evaluations listed by the API (about four minutes of a busy server)


@dataclass(frozen=True)
class Evaluation:
    at: int  # the evaluation's instant (ms): what its changes are stamped with
    recorded_at: int  # when its transaction had committed (ms)
    cause: str  # ingest or timer (real time); calculation (first calculations, the recovery)
    users: int
    batches: int
    timers: int
    adds: int
    removes: int
    first_seq: int | None  # the change log's rows it wrote
    last_seq: int | None
    oldest_batch_ms: int | None  # the longest a batch waited from its receipt to being recorded
    latest_timer_ms: int | None  # the longest a due timer waited from its instant to being recorded
    timers_left: int | None  # users due at its instant left to the next one (None: not real time)
    # The evaluator thread's time in it: on a core, and ready but waiting for one (None: unknown).
    # Much time waiting means the cores are scarce; what the wall time has beyond both, the thread
    # spent blocked (the GIL, locks, DuckDB's worker threads).
    cpu_ms: int | None = None
    waiting_ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Evaluations:
    """Thread-safe: the evaluator notes, the API and `/metrics` read."""

    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._recent: deque[Evaluation] = deque(maxlen=keep)
        self.registry = CollectorRegistry()
        r = self.registry
        self._count = Counter(
            "milepost_evaluations",
            "Evaluations committed (real time, first calculations, recovery).",
            registry=r,
        )
        self._seconds = Counter(
            "milepost_evaluation_seconds", "Time from each evaluation's instant to its commit.", registry=r
        )
        self._lag = Latencies(
            "milepost_evaluation_lag_seconds",
            "Per batch: from its receipt to its membership changes being recorded.",
            WAIT_BUCKETS,
        )
        self._lateness = Latencies(
            "milepost_timer_lateness_seconds",
            "Per due timer: from its instant to its membership changes being recorded.",
            WAIT_BUCKETS,
        )
        r.register(self._lag)
        r.register(self._lateness)
        self._backlog = Gauge(
            "milepost_timer_backlog",
            "Users whose timers were due but left for the next evaluation.",
            registry=r,
        )
        self._last_lag = Gauge(
            "milepost_evaluation_lag_last_seconds",
            "The longest wait of a batch in the latest evaluation that had batches.",
            registry=r,
        )

    def note(
        self, result: EvalResult, recorded_at: int, spent: ThreadTimes | None = None
    ) -> Evaluation | None:
        """Note a committed evaluation (None for a call that evaluated nothing); `spent`: the
        evaluating thread's times in it."""
        if result.at is None:
            return None
        lags = [max(0, recorded_at - t) for t, _ in result.received]
        late = [max(0, recorded_at - t) for t in result.due]
        evaluation = Evaluation(
            at=result.at,
            recorded_at=recorded_at,
            cause=result.cause or "",
            users=result.users,
            batches=sum(n for _, n in result.received),
            timers=len(result.due),
            adds=result.adds,
            removes=result.removes,
            first_seq=result.seqs[0] if result.seqs else None,
            last_seq=result.seqs[1] if result.seqs else None,
            oldest_batch_ms=max(lags, default=None),
            latest_timer_ms=max(late, default=None),
            timers_left=None if result.due_total is None else max(0, result.due_total - len(result.due)),
            cpu_ms=None if spent is None else round(spent.on_cpu_s * 1000),
            waiting_ms=None if spent is None or spent.waiting_s is None else round(spent.waiting_s * 1000),
        )
        with self._lock:
            self._recent.append(evaluation)
        self._count.inc()
        self._seconds.inc(max(0, recorded_at - result.at) / 1000)
        self._lag.observe([ms / 1000 for ms in lags], [n for _, n in result.received])
        self._lateness.observe([ms / 1000 for ms in late])
        if evaluation.timers_left is not None:
            self._backlog.set(evaluation.timers_left)
        if lags:
            self._last_lag.set(max(lags) / 1000)
        return evaluation

    def recent(self, limit: int) -> list[Evaluation]:
        """The latest `limit` evaluations, oldest first."""
        with self._lock:
            return list(self._recent)[-limit:] if limit > 0 else []

    def metrics(self) -> str:
        return generate_latest(self.registry).decode()
