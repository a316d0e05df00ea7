"""The audience engine: evaluates journey trees for a set of users and records what changed.

One method does the work for every use: `evaluate(now, candidates)` computes the trees for the
candidate users (all users for a full calculation), diffs against stored membership, and writes
the new membership, the change log and the users' next timers in one transaction. Real time is
`catch_up` (users of batches not yet evaluated) plus `advance` (users whose timers are due); the
server runs both as one evaluation (`realtime`).
Which queries run in which order is `audiences/dataflow.py`; with a `FullCalculator` (Spark), a
full calculation computes the new membership there and only the diff is applied here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
from sqlglot import exp

from milepost.audiences.dataflow import Plan, make_plan, steps
from milepost.audiences.plan_sql import NOW_SQL, NOW_VARIABLE, Compiled, SqlStep, compile_plan
from milepost.audiences.scope import ScopeCopies
from milepost.audiences.statements import Script, Statements
from milepost.audiences.timer_sql import TimerStatements
from milepost.audiences.tree import JourneyRows
from milepost.audiences.user_events import UserEvents, UserEventsSettings
from milepost.clock import Clock
from milepost.criteria import CalculatedAttribute, to_sql
from milepost.criteria.dialect import DUCKDB
from milepost.engines.duckdb_membership import (
    ensure_membership_tables,
    entries_with_changes_sql,
    log_changes_sql,
    log_entries_sql,
)

WATERMARK_KEY = "evaluated_batch_seq"
# The batches real time evaluates (the others are kept for analysis only).
REALTIME_BATCHES = "endpoint = 'events' AND environment = 'production'"
# A real-time step's work (parameters: the watermark's key, now, the most timers): the last batch
# seq after the watermark, the users of the batches up to it, when those batches arrived (each
# instant and how many batches arrived then: a request's batches share it), the users whose timers
# are due (the earliest first) and their due instants, and how many are due.
REALTIME_WORK_SQL = f"""
WITH wm AS (SELECT coalesce(max(value::BIGINT), 0) AS seq FROM store_meta WHERE key = $1),
top AS (SELECT max(b.seq) AS seq FROM batches b, wm WHERE b.seq > wm.seq),
new AS (SELECT b.mpid, b.received_at FROM batches b, wm, top
        WHERE b.seq > wm.seq AND b.seq <= top.seq AND {REALTIME_BATCHES}),
due AS (SELECT mpid, due_at FROM timers WHERE due_at <= $2 ORDER BY due_at LIMIT $3)
SELECT top.seq,
    (SELECT list(DISTINCT mpid) FROM new),
    (SELECT list([received_at, n] ORDER BY received_at)
     FROM (SELECT received_at, count(*) AS n FROM new GROUP BY received_at)),
    (SELECT list(mpid ORDER BY due_at) FROM due),
    (SELECT list(due_at ORDER BY due_at) FROM due),
    (SELECT count(*) FROM timers WHERE due_at <= $2)
FROM top
"""
# With nothing maintained, how often the read position is written down (a commit with an fsync:
# at 1 s it was most of the evaluator thread's CPU during ingest).
IDLE_WATERMARK_S = 10.0


@dataclass(frozen=True)
class EngineSettings:
    lookback_ms: int
    lifetime_ms: int


@dataclass
class EvalResult:
    adds: int = 0
    removes: int = 0
    users: int = 0
    per_audience: dict[int, tuple[int, int]] = field(default_factory=dict)  # audience -> (adds, removes)
    # The change log's rows this evaluation wrote, (first seq, last seq); None when it wrote none.
    seqs: tuple[int, int] | None = None
    # The evaluation's instant and cause (None for a call that evaluated nothing).
    at: int | None = None
    cause: str | None = None
    # A real-time step's work: when its batches arrived ([instant, batches]), when its timers were
    # due, and how many users' timers were due at its instant (it takes at most `max_timer_users`;
    # None: not a real-time step).
    received: list[tuple[int, int]] = field(default_factory=list)
    due: list[int] = field(default_factory=list)
    due_total: int | None = None


_Plan = Plan


class FullCalculator(Protocol):
    """Runs a full calculation on another engine, reading the store through `con`."""

    def calculate(
        self, con: duckdb.DuckDBPyConnection, plan: Plan, now: int, settings: EngineSettings
    ) -> str:
        """Evaluate every step of `plan` at `now`; return a DuckDB-readable Parquet glob holding the
        resulting members `(audience_id, mpid)` of every audience the plan writes."""
        ...


class AudienceEngine:
    """Owns one connection to the store; every method runs under one lock (one evaluation at a time)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        clock: Clock,
        settings: EngineSettings,
        calculator: FullCalculator | None = None,
        user_events: UserEventsSettings | None = None,
    ) -> None:
        self.con = con
        self.clock = clock
        self.settings = settings
        self.calculator = calculator  # None: full calculations run here too
        self._lock = threading.RLock()
        self._plan = _Plan()
        # The current plan compiled, per form: scoped (False) and full calculations' fused (True).
        self._cache: dict[bool, tuple[_Plan, EngineSettings, Compiled]] = {}
        self._bounds: SqlStep | None = None  # the step whose rows this evaluation put in `eval_bounds`
        self._step_no = 0  # steps of the running evaluation, ordering its change log
        self._logged = False  # whether the running evaluation's `eval_log` holds a row
        # Audiences a step entered every member of, straight into memberships (`_enter`): their
        # step numbers, which order their adds in the change log.
        self._entered: dict[int, int] = {}
        # Members per audience in the running evaluation's scope, kept up to date by each step's
        # diff: a step whose parent and audiences are empty is known to change nothing.
        self._sizes: dict[int, int] | None = None
        self._idle_mark = -IDLE_WATERMARK_S
        self._db = str(con.execute("SELECT current_database()").fetchall()[0][0])
        self._statements = Statements()  # the diffs and timers, parsed once
        self._script = Script(con)  # an evaluation's statements whose results nobody reads
        # Scoped evaluations' copies; their events are held by user once the store is large.
        self._copies = ScopeCopies(
            con,
            self._script,
            self._db,
            UserEvents(con, f"{self._db}.main.events", user_events or UserEventsSettings()),
        )
        self._timers = TimerStatements(NOW_SQL)
        self._diffed = False  # whether the running evaluation's `eval_diff` holds an earlier step's rows
        ensure_membership_tables(con)
        row = con.execute("SELECT max(seq) FROM membership_changes").fetchall()
        self._seq = int(row[0][0] or 0)

    @property
    def user_events(self) -> UserEvents:
        """Where scoped evaluations take their candidates' events from, once read (ADR 0007)."""
        return self._copies.user_events

    @user_events.setter
    def user_events(self, events: UserEvents) -> None:
        self._copies.user_events = events

    # ---- what is maintained ------------------------------------------------------------------

    def configure(
        self,
        journeys: Sequence[JourneyRows],
        calculated: Mapping[str, CalculatedAttribute],
        settings: EngineSettings | None = None,
        maintained: frozenset[int] | None = None,
    ) -> None:
        """Set what is maintained: the journeys' trees, restricted to `maintained` audiences when given.

        Memberships of audiences no longer maintained are dropped (without change records: nothing
        downstream follows an audience that is not calculated).
        """
        with self._lock:
            if settings is not None:
                self.settings = settings
            self._plan = self._make_plan(journeys, calculated, maintained)
            keep = self._plan.audience_ids()
            self.con.execute(
                "DELETE FROM memberships WHERE NOT list_contains(?::BIGINT[], audience_id)", [keep]
            ).fetchall()

    def _make_plan(
        self,
        journeys: Sequence[JourneyRows],
        calculated: Mapping[str, CalculatedAttribute],
        maintained: frozenset[int] | None,
    ) -> _Plan:
        return make_plan(
            journeys, calculated, maintained, self.settings.lookback_ms, self.settings.lifetime_ms
        )

    def what_if(
        self,
        journeys: Sequence[JourneyRows],
        calculated: Mapping[str, CalculatedAttribute],
        read: Sequence[int],
        now: int | None = None,
    ) -> tuple[EvalResult, dict[int, list[int]]]:
        """Evaluate these journeys in full as if every audience were maintained, then undo everything.

        Returns the changes it would make (per audience, against stored membership) and the members
        of the audiences in `read`: the preview of audiences that are not calculated, and dry runs.
        """
        with self._lock:
            now = self.clock.now_ms() if now is None else now
            plan = self._make_plan(journeys, calculated, None)
            result = EvalResult()
            con = self.con
            self._script.begin()
            try:
                self._evaluate_plan(plan, now, None, "preview", result)
                self._script.flush()
                members = {
                    a: [
                        int(r[0])
                        for r in con.execute(
                            "SELECT mpid FROM memberships WHERE audience_id = ? ORDER BY mpid", [a]
                        ).fetchall()
                    ]
                    for a in read
                }
            except BaseException:
                self._statements.reset(con)
                raise
            finally:
                self._script.rollback()
            self._seq = int(
                con.execute("SELECT coalesce(max(seq), 0) FROM membership_changes").fetchall()[0][0]
            )
            return result, members

    # ---- the three uses ---------------------------------------------------------------------

    def full_calculation(self, now: int | None = None, cause: str = "full") -> EvalResult:
        """Recompute every maintained audience for every user (on the calculator when there is one)."""
        return self.evaluate(self.clock.now_ms() if now is None else now, None, cause, remote=True)

    def last_user(self) -> tuple[int | None, int]:
        """The highest mpid with a profile, a membership or a timer (where a calculation in parts
        ends), and how many profiles there are."""
        with self._lock:
            row = self.con.execute(
                "SELECT max(m), sum(n) FROM (SELECT max(mpid), count(*) FROM users UNION ALL "
                "SELECT max(mpid), 0 FROM memberships UNION ALL SELECT max(mpid), 0 FROM timers) t(m, n)"
            ).fetchall()
            return (None if row[0][0] is None else int(row[0][0])), int(row[0][1] or 0)

    def calculate_part(
        self,
        after: int | None,
        limit: int,
        upto: int | None,
        now: int | None = None,
        cause: str = "calculation",
    ) -> tuple[EvalResult, int | None]:
        """One part of a full calculation: every maintained audience for the users of the next
        `limit` profiles by mpid in `(after, upto]` (`after` None: from the first; mpids may be negative). Returns
        the result and the last mpid covered (None: no user is left).

        Parts covering every user up to `last_user()` at the start leave the state a full
        calculation leaves: each user's membership depends on their own data only, and users who
        arrive or change meanwhile are evaluated by real time on the same plan."""
        with self._lock:
            now = self.clock.now_ms() if now is None else now
            if upto is None:
                return EvalResult(), None
            # The part ends at its `limit`-th profile (or at `upto` when fewer are left), and takes
            # every user up to there: a top-N over profiles, then range scans, instead of a
            # distinct over the whole store per part.
            lower = "(?::BIGINT IS NULL OR mpid > ?)"
            top = self.con.execute(
                f"SELECT count(*), max(mpid) FROM (SELECT mpid FROM users WHERE {lower} AND mpid <= ? "
                "ORDER BY mpid LIMIT ?)",
                [after, after, upto, max(1, limit)],
            ).fetchall()[0]
            end = upto if int(top[0]) < max(1, limit) else int(top[1])
            within = f"{lower} AND mpid <= ?"
            rows = self.con.execute(
                f"SELECT mpid FROM users WHERE {within} UNION SELECT mpid FROM memberships WHERE {within} "
                f"UNION SELECT mpid FROM timers WHERE {within} ORDER BY mpid",
                [after, after, end] * 3,
            ).fetchall()
            if not rows:
                return EvalResult(), None
            mpids = [int(r[0]) for r in rows]
            return self.evaluate(now, mpids, cause, span=(mpids[0], mpids[-1])), mpids[-1]

    def catch_up(self, now: int | None = None) -> EvalResult:
        """Evaluate the users of every accepted real-time batch not evaluated yet."""
        with self._lock:
            now = self.clock.now_ms() if now is None else now
            wm = self._watermark()
            rows = self.con.execute("SELECT max(seq) FROM batches WHERE seq > ?", [wm]).fetchall()
            top = rows[0][0]
            if top is None:
                return EvalResult()
            if not self._plan.journeys:  # nothing maintained: only remember how far the log was read
                self.con.execute(
                    "INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [WATERMARK_KEY, str(int(top))]
                ).fetchall()
                return EvalResult()
            mpids = self._batch_users(wm, int(top))
            return self.evaluate(now, mpids, "ingest", watermark=int(top))

    def realtime(self, now: int | None = None, *, max_timer_users: int = 50_000) -> EvalResult:
        """The server's real-time step: `catch_up` and a non-exact `advance` in one evaluation at `now`.

        Users of new batches and users whose timers are due (at most `max_timer_users`) share the
        evaluation's fixed cost; each change is logged with the cause of its user (ingest first).
        """
        with self._lock:
            if not self._plan.journeys:
                # Nothing maintained: only note, now and then, how far the log was read. A stale
                # position costs a re-evaluation of those users once something is maintained,
                # never a wrong membership; writing it after every commit cost ingest ~10% CPU.
                if time.monotonic() - self._idle_mark >= IDLE_WATERMARK_S:
                    self._idle_mark = time.monotonic()
                    self.catch_up(now)
                return EvalResult()
            now = self.clock.now_ms() if now is None else now
            # One query for what is new and what is due: under load each call into DuckDB waits
            # for the GIL when it returns (see `Script`).
            top, batch_users, received, due_users, due_at, due_total = self.con.execute(
                REALTIME_WORK_SQL, [WATERMARK_KEY, now, max_timer_users]
            ).fetchall()[0]
            ingest = [int(m) for m in batch_users or ()]
            due = [int(m) for m in due_users or ()]
            if top is None and not due:
                return EvalResult()
            users = list(dict.fromkeys([*ingest, *due]))
            watermark = None if top is None else int(top)
            if not ingest or not due:
                result = self.evaluate(now, users, "ingest" if ingest else "timer", watermark)
            else:
                result = self.evaluate(now, users, "ingest", watermark, ingest_users=ingest)
            result.due_total = int(due_total)
            result.received = [(int(t), int(n)) for t, n in received or ()]
            result.due = [int(t) for t in due_at or ()]
            return result

    def advance(self, now: int | None = None, *, exact: bool = True, max_users: int = 50_000) -> EvalResult:
        """Fire due timers.

        `exact`: in time order, each group of users evaluated at its own due instant (tests and
        conformance). Otherwise (the server): one evaluation at `now` of at most `max_users` users
        due by then, so a backlog of timers never holds up the evaluation of new batches for long.
        """
        total = EvalResult()
        with self._lock:
            now = self.clock.now_ms() if now is None else now
            while True:
                row = self.con.execute("SELECT min(due_at) FROM timers WHERE due_at <= ?", [now]).fetchall()
                due = row[0][0]
                if due is None:
                    return total
                at = int(due) if exact else now
                mpids = [
                    int(r[0])
                    for r in self.con.execute(
                        "SELECT mpid FROM timers WHERE due_at <= ? ORDER BY due_at LIMIT ?", [at, max_users]
                    ).fetchall()
                ]
                res = self.evaluate(at, mpids, "timer")
                total.adds += res.adds
                total.removes += res.removes
                total.users += res.users
                if not exact:
                    return total

    # ---- evaluation --------------------------------------------------------------------------

    def evaluate(
        self,
        now: int,
        candidates: Sequence[int] | None,
        cause: str,
        watermark: int | None = None,
        *,
        remote: bool = False,
        ingest_users: Sequence[int] | None = None,
        span: tuple[int, int] | None = None,
    ) -> EvalResult:
        """`ingest_users`: the candidates evaluated for new data; changes of the others are logged
        with the cause "timer" (a real-time step evaluating both kinds together). `span`: an mpid
        range `[first, last]` holding every candidate, which lets the scoped copies skip the rest
        of the store without a join."""
        with self._lock:
            con = self.con
            plan = self._plan
            result = EvalResult(at=now, cause=cause)
            first_seq = self._seq + 1
            self._script.begin()
            try:
                if remote and candidates is None and self.calculator is not None and plan.journeys:
                    self._apply_calculated(plan, now, cause, result)
                else:
                    self._evaluate_plan(plan, now, candidates, cause, result, ingest_users, span)
                if watermark is not None:
                    self._script.later(
                        f"INSERT OR REPLACE INTO store_meta VALUES ('{WATERMARK_KEY}', '{int(watermark)}')"
                    )
                self._script.run("COMMIT")
            except BaseException:
                self._script.rollback()
                self._statements.reset(con)
                raise
            if self._seq >= first_seq:
                result.seqs = (first_seq, self._seq)
            return result

    def _evaluate_plan(
        self,
        plan: _Plan,
        now: int,
        candidates: Sequence[int] | None,
        cause: str,
        result: EvalResult,
        ingest: Sequence[int] | None = None,
        span: tuple[int, int] | None = None,
    ) -> None:
        scoped = candidates is not None
        self._bind_now(now)
        self._script.later("DELETE FROM eval_candidates")
        self._begin_log()
        compiled = self._compiled(plan, fused=not scoped)
        copies: list[str] = []
        with contextlib.ExitStack() as registered:  # the candidates, their copies and the sizes: one call
            if scoped:
                registered.enter_context(self._copies.filled("eval_candidates", candidates or []))
                read = compiled.tables | {"users"}  # roots and timers read users
                if plan.boundaries is not None and plan.boundaries.event_durations_ms:
                    read |= {"events"}  # timers read events
                copies = self._copies.copy(read, compiled.columns, span, candidates or [], registered)
            else:
                self._copies.drop()
            self._sizes = {
                int(a): int(n)
                for a, n in self._script.run("SELECT audience_id, count(*) FROM memberships GROUP BY ALL")
            }
        result.users = len(candidates or [])
        if compiled.roots is not None:
            self._evaluate_root(compiled.roots, now, scoped, cause, result)
        for batch in compiled.batches:
            self._run_batch(batch, now, scoped, cause, result)
        self._set_timers(plan, now, scoped)
        if self._bounds is not None:
            self._script.later("DROP TABLE IF EXISTS eval_bounds")
            self._bounds = None
        self._flush(now, scoped, cause, ingest)
        self._sizes = None
        if scoped:
            self._copies.drop(copies)

    def _begin_log(self) -> None:
        self._step_no = 0
        self._logged = False
        self._entered = {}
        self._bounds = None
        self._diffed = False
        self._script.later(
            "CREATE OR REPLACE TEMP TABLE eval_log (step INTEGER, audience_id BIGINT, mpid BIGINT, added BOOLEAN)",
            "CREATE OR REPLACE TEMP TABLE eval_diff (audience_id BIGINT, mpid BIGINT, added BOOLEAN)",
        )

    def _flush(self, now: int, scoped: bool, cause: str, ingest: Sequence[int] | None = None) -> None:
        """Record the evaluation's changes (kept in `eval_log`) in the change log; when scoped, also
        apply them to the stored membership (the steps updated the candidates' copy). With `ingest`,
        changes of other users are logged as caused by their timers."""
        if not self._logged and not self._entered:
            return
        cause_sql = to_sql(exp.convert(cause))
        filled: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if ingest is not None:
            filled = self._copies.filled("eval_ingest", ingest, create=True)
            cause_sql = f"CASE WHEN mpid IN (SELECT mpid FROM eval_ingest) THEN {cause_sql} ELSE 'timer' END"
        with filled:  # the users of the batches, the stored membership's changes and the log: one call
            if scoped:
                stored = f"{self._db}.main.memberships"
                self._script.later(
                    f"DELETE FROM {stored} WHERE rowid IN (SELECT s.stored_row FROM eval_stored s "
                    "JOIN eval_log r ON r.audience_id = s.audience_id AND r.mpid = s.mpid WHERE NOT r.added)",
                    f"INSERT INTO {stored} SELECT audience_id, mpid, {int(now)} FROM eval_log WHERE added",
                )
            at = (self._seq, now, cause_sql, self.clock.now_ms())
            if not self._logged:  # only entries (a full calculation of new audiences)
                entered = sorted(self._entered, key=lambda a: (self._entered[a], a))
                n = self._script.run(log_entries_sql(entered, *at))[0][0]
            else:
                changes = entries_with_changes_sql("eval_log", self._entered) if self._entered else "eval_log"
                n = self._script.run(log_changes_sql(changes, *at))[0][0]
        self._seq += int(n)

    def _compiled(self, plan: _Plan, fused: bool = False) -> Compiled:
        """The plan's queries as SQL text, compiled once per plan and settings: every evaluation
        binds its instant through `NOW_VARIABLE` instead of compiling again. `fused`: for a full
        calculation of one journey, its root's children also give every member's next event
        boundary (`Step.bounds`), which the timers then read instead of scanning the events again."""
        b = plan.boundaries
        timers: tuple[int, ...] = ()
        if fused and b is not None and b.event_durations_ms and len(plan.journeys) == 1:
            timers = tuple(sorted(int(d) for d in b.event_durations_ms))
        cached = self._cache.get(bool(timers))
        if cached is not None and cached[0] is plan and cached[1] == self.settings:
            return cached[2]
        compiled = compile_plan(plan, self.settings.lookback_ms, self.settings.lifetime_ms, timers)
        if plan is self._plan:  # what-if plans are evaluated once
            self._cache[bool(timers)] = (plan, self.settings, compiled)
        return compiled

    def _apply_calculated(self, plan: _Plan, now: int, cause: str, result: EvalResult) -> None:
        """A full calculation done by the calculator: its final membership, applied step by step.

        Each audience is written by exactly one step, so the calculator's final rows restricted to
        a step's audiences are that step's new members; applying them in step order gives the same
        entry times and change log as evaluating here.
        """
        assert self.calculator is not None
        self._sizes = None
        self._bind_now(now)  # the timers statement reads it
        self._script.later("DELETE FROM eval_candidates")
        self._copies.drop()
        self._begin_log()
        self._script.flush()  # the calculator reads the store through this connection
        path = self.calculator.calculate(self.con, plan, now, self.settings)
        source = "read_parquet(" + to_sql(exp.convert(path)) + ")"
        self._script.later(
            f"CREATE OR REPLACE TEMP TABLE eval_calculated AS SELECT audience_id, mpid FROM {source}"
        )
        try:
            stored = set(plan.audience_ids())
            for step in steps(plan, now, self.settings.lookback_ms, self.settings.lifetime_ms, DUCKDB):
                if not stored.intersection(step.writes):
                    continue  # a journey root whose membership is not stored
                self._apply_diff(
                    list(step.writes),
                    f"SELECT audience_id, mpid FROM eval_calculated WHERE list_contains({_ids(step.writes)}, audience_id)",
                    now,
                    False,
                    cause,
                    result,
                )
        finally:
            self._script.later("DROP TABLE IF EXISTS eval_calculated")
        self._set_timers(plan, now, False)
        self._flush(now, False, cause)

    def _scope(self, column: str, scoped: bool) -> str:
        return f" AND {column} IN (SELECT mpid FROM eval_candidates)" if scoped else ""

    def _evaluate_root(self, step: SqlStep, now: int, scoped: bool, cause: str, result: EvalResult) -> None:
        """Every journey's root in one query (roots are independent of each other)."""
        self._run_batch([step], now, scoped, cause, result)

    def _run_batch(
        self, batch: list[SqlStep], now: int, scoped: bool, cause: str, result: EvalResult
    ) -> None:
        """Independent steps as one diff; steps known to change nothing are left out."""
        sizes = self._sizes
        writes: list[int] = []
        parts: list[str] = []
        numbers: dict[int, int] = {}
        for step in batch:
            sql = step.sql
            if sizes is not None and step.parent is not None and not sizes.get(step.parent):
                sql = None  # members are drawn from the parent's: none
            if sql is None and sizes is not None and not any(sizes.get(a) for a in step.writes):
                continue  # empty before and after
            writes += step.writes
            numbers.update((a, step.number) for a in step.writes)
            if sql is not None and step.bounds:
                self._script.later(f"CREATE OR REPLACE TEMP TABLE eval_bounds AS {sql}")
                self._bounds = step
                parts.append("SELECT audience_id, mpid FROM eval_bounds WHERE audience_id IS NOT NULL")
            elif sql is not None:
                parts.append(f"SELECT audience_id, mpid FROM ({sql})")
        if not writes:
            return
        new = (
            " UNION ALL ".join(parts)
            if parts
            else "SELECT NULL::BIGINT AS audience_id, NULL::BIGINT AS mpid LIMIT 0"
        )
        self._apply_diff(writes, new, now, scoped, cause, result, numbers)

    def _apply_diff(
        self,
        audience_ids: list[int],
        new: str,
        now: int,
        scoped: bool,
        cause: str,
        result: EvalResult,
        numbers: Mapping[int, int] | None = None,
    ) -> None:
        """Write the difference between the rows of `new` and stored membership of these audiences
        (the change log follows in `_flush`). `numbers`: each audience's step number, when the
        diff covers several steps."""
        self._step_no += 1
        step_sql = str(self._step_no)
        if numbers is not None:
            step_sql = (
                "CASE audience_id "
                + " ".join(f"WHEN {int(a)} THEN {int(n)}" for a, n in numbers.items())
                + " END"
            )
        if self._sizes is not None and not any(self._sizes.get(a) for a in audience_ids):
            if not scoped:
                return self._enter(audience_ids, new, numbers, result)
            # Nothing stored for these audiences (in scope): every row of `new` is an add, no join.
            counts = self._write_diff(f"SELECT audience_id, mpid, true AS added FROM ({new}) n")
        else:
            # One pass: rows of `new` not stored (added) and stored rows not in `new` (removed).
            # (A step yields each (audience, user) once.)
            counts = self._diff(new, audience_ids, scoped)
        if not counts:
            return
        adds = sum(int(r[1]) for r in counts)
        removes = sum(int(r[2]) for r in counts)
        if self._sizes is not None:
            for a, n_add, n_remove in counts:
                self._sizes[int(a)] = self._sizes.get(int(a), 0) + int(n_add) - int(n_remove)
        if removes:
            self._script.later(
                "DELETE FROM memberships WHERE EXISTS (SELECT 1 FROM eval_diff r WHERE NOT r.added "
                "AND r.audience_id = memberships.audience_id AND r.mpid = memberships.mpid)"
            )
        if adds:
            self._script.later(
                f"INSERT INTO memberships SELECT audience_id, mpid, {int(now)} FROM eval_diff WHERE added"
            )
        if scoped or any(a > 0 for a in audience_ids):  # journey roots are in no change log
            self._script.later(f"INSERT INTO eval_log SELECT {step_sql}, * FROM eval_diff")
            self._logged = True
        if all(a > 0 for a in audience_ids):  # journey roots are bookkeeping, not audiences
            result.adds += adds
            result.removes += removes
            for a, n_add, n_remove in counts:
                prev = result.per_audience.get(int(a), (0, 0))
                result.per_audience[int(a)] = (prev[0] + int(n_add), prev[1] + int(n_remove))

    def _enter(
        self, audience_ids: list[int], new: str, numbers: Mapping[int, int] | None, result: EvalResult
    ) -> None:
        """Audiences with no stored member (a full calculation of new audiences): the rows of `new`
        go straight into memberships, and `_flush` logs them from there (each audience is written
        by one step), instead of passing a million rows through `eval_diff` and `eval_log` too."""
        insert = f"INSERT INTO memberships SELECT audience_id, mpid, {to_sql(NOW_SQL)} FROM ({new}) n"
        if not int(self._run_statement(insert)[0][0]):
            return
        counts = self._script.run(
            "SELECT audience_id, count(*) FROM memberships WHERE list_contains(?, audience_id) GROUP BY ALL",
            [audience_ids],
        )
        assert self._sizes is not None
        self._sizes.update((int(a), int(n)) for a, n in counts)
        # Journey roots are in no change log.
        self._entered.update(
            (a, self._step_no if numbers is None else numbers[a]) for a in audience_ids if a > 0
        )
        if all(a > 0 for a in audience_ids):  # journey roots are bookkeeping, not audiences
            for a, n in counts:
                result.adds += int(n)
                prev = result.per_audience.get(int(a), (0, 0))
                result.per_audience[int(a)] = (prev[0] + int(n), prev[1])

    def _counts(self) -> list[tuple[int, int, int]]:
        """Adds and removes per audience in `eval_diff`."""
        rows = self._script.run(
            "SELECT audience_id, count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) "
            "FROM eval_diff GROUP BY audience_id"
        )
        return [(int(a), int(n_add), int(n_remove)) for a, n_add, n_remove in rows]

    def _diff(self, new: str, audience_ids: list[int], scoped: bool) -> list[tuple[int, int, int]]:
        """`eval_diff`: rows of `new` not stored (added), stored rows not in `new` (removed). When
        scoped, `memberships` is the candidates' copy: it needs no filter on them."""
        return self._write_diff(
            "SELECT coalesce(n.audience_id, m.audience_id) AS audience_id, coalesce(n.mpid, m.mpid) AS mpid, "
            f"m.mpid IS NULL AS added FROM ({new}) n FULL OUTER JOIN (SELECT audience_id, mpid FROM memberships "
            f"WHERE list_contains({_ids(audience_ids)}, audience_id)) m "
            "ON m.audience_id = n.audience_id AND m.mpid = n.mpid WHERE n.mpid IS NULL OR m.mpid IS NULL"
        )

    def _write_diff(self, rows: str) -> list[tuple[int, int, int]]:
        """`eval_diff` holding only `rows` (audience_id, mpid, added); its adds and removes per
        audience (`_counts`), read in the same call. The statement's text is the same in every
        evaluation of the plan: it is parsed once (`Statements`)."""
        if self._diffed:
            self._script.later("DELETE FROM eval_diff")
        self._diffed = True
        self._script.later(*self._statements.script(f"INSERT INTO eval_diff {rows}"))
        return self._counts()

    def _run_statement(self, sql: str) -> list[Any]:
        """The rows of a long statement run again and again (parsed once: `Statements`), after the
        statements held."""
        *before, last = self._statements.script(sql)
        self._script.later(*before)
        return self._script.run(last)

    def _bind_now(self, now: int) -> None:
        """The evaluation's instant, which the compiled statements read as `NOW_SQL`."""
        self._script.later(f"SET VARIABLE {NOW_VARIABLE} = {int(now)}::BIGINT")

    def _set_timers(self, plan: _Plan, now: int, scoped: bool) -> None:
        """Each user's next instant of possible change (`timer_sql`). When scoped, `users`, `events`
        and `memberships` are the candidates' copies (`timers` is not)."""
        self._script.later("DELETE FROM timers WHERE true" + self._scope("mpid", scoped))
        step = None if scoped else self._bounds
        bounds = "eval_bounds" if step is not None else None
        sql = self._timers.sql(plan, self.settings.lifetime_ms, bounds, step is not None and step.bounds_own)
        if sql is not None:
            self._script.later(*self._statements.script(sql))

    def _batch_users(self, after: int, upto: int) -> list[int]:
        """The users of the real-time batches in (after, upto]: what evaluating them must cover."""
        return [
            int(r[0])
            for r in self.con.execute(
                f"SELECT DISTINCT mpid FROM batches WHERE seq > ? AND seq <= ? AND {REALTIME_BATCHES}",
                [after, upto],
            ).fetchall()
        ]

    def _watermark(self) -> int:
        rows = self.con.execute("SELECT value FROM store_meta WHERE key = ?", [WATERMARK_KEY]).fetchall()
        return int(rows[0][0]) if rows else 0

    # ---- reads ---------------------------------------------------------------------------------

    def size(self, audience_id: int) -> int:
        with self._lock:
            return int(
                self.con.execute(
                    "SELECT count(*) FROM memberships WHERE audience_id = ?", [audience_id]
                ).fetchall()[0][0]
            )

    def members(self, audience_id: int) -> list[int]:
        with self._lock:
            rows = self.con.execute(
                "SELECT mpid FROM memberships WHERE audience_id = ? ORDER BY mpid", [audience_id]
            ).fetchall()
            return [int(r[0]) for r in rows]


def _ids(audience_ids: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(a)) for a in audience_ids) + "]::BIGINT[]"
