"""The audience engine: evaluates journey trees for a set of users and records what changed.

One method does the work for every use: `evaluate(now, candidates)` computes the trees for the
candidate users (all users for a full calculation), diffs against stored membership, and writes
the new membership, the change log and the users' next timers in one transaction. Real time is
`catch_up` (users of batches not yet evaluated) plus `advance` (users whose timers are due).
Which queries run in which order is `audiences/dataflow.py`; with a `FullCalculator` (Spark), a
full calculation computes the new membership there and only the diff is applied here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import pyarrow as pa
from sqlglot import exp

from milepost.audiences.dataflow import Plan, Step, group_steps, make_plan, root_query, steps
from milepost.audiences.tree import JourneyRows, SiblingGroup, root_audience_id
from milepost.clock import Clock
from milepost.criteria import CalculatedAttribute, to_sql
from milepost.criteria.dialect import DUCKDB
from milepost.engines.duckdb_membership import MEMBERSHIP_DDL, SCRATCH_DDL

WATERMARK_KEY = "evaluated_batch_seq"
SCOPED_TABLES = ("events", "users", "identities", "consents", "devices")


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
    ) -> None:
        self.con = con
        self.clock = clock
        self.settings = settings
        self.calculator = calculator  # None: full calculations run here too
        self._lock = threading.RLock()
        self._plan = _Plan()
        for ddl in MEMBERSHIP_DDL + SCRATCH_DDL:
            con.execute(ddl).fetchall()
        row = con.execute("SELECT max(seq) FROM membership_changes").fetchall()
        self._seq = int(row[0][0] or 0)
        self._db = str(con.execute("SELECT current_database()").fetchall()[0][0])

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
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                self._evaluate_plan(plan, now, None, "preview", result)
                members = {
                    a: [
                        int(r[0])
                        for r in con.execute(
                            "SELECT mpid FROM memberships WHERE audience_id = ? ORDER BY mpid", [a]
                        ).fetchall()
                    ]
                    for a in read
                }
            finally:
                con.execute("ROLLBACK").fetchall()
            self._seq = int(
                con.execute("SELECT coalesce(max(seq), 0) FROM membership_changes").fetchall()[0][0]
            )
            return result, members

    # ---- the three uses ---------------------------------------------------------------------

    def full_calculation(self, now: int | None = None, cause: str = "full") -> EvalResult:
        """Recompute every maintained audience for every user (on the calculator when there is one)."""
        return self.evaluate(self.clock.now_ms() if now is None else now, None, cause, remote=True)

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
            mpids = [
                int(r[0])
                for r in self.con.execute(
                    "SELECT DISTINCT mpid FROM batches WHERE seq > ? AND seq <= ? "
                    "AND endpoint = 'events' AND environment = 'production'",
                    [wm, top],
                ).fetchall()
            ]
            return self.evaluate(now, mpids, "ingest", watermark=int(top))

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
    ) -> EvalResult:
        with self._lock:
            con = self.con
            plan = self._plan
            result = EvalResult()
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                if remote and candidates is None and self.calculator is not None and plan.journeys:
                    self._apply_calculated(plan, now, cause, result)
                else:
                    self._evaluate_plan(plan, now, candidates, cause, result)
                if watermark is not None:
                    con.execute(
                        "INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [WATERMARK_KEY, str(watermark)]
                    ).fetchall()
                con.execute("COMMIT").fetchall()
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
            return result

    def _evaluate_plan(
        self, plan: _Plan, now: int, candidates: Sequence[int] | None, cause: str, result: EvalResult
    ) -> None:
        scoped = candidates is not None
        self.con.execute("DELETE FROM eval_candidates").fetchall()
        self._drop_scope_copies()
        if scoped:
            self._fill("eval_candidates", candidates or [])
            result.users = len(candidates or [])
            # The candidates' rows, copied once: every query of this evaluation then reads a few
            # thousand rows instead of filtering the whole store again per sibling group.
            for table in SCOPED_TABLES:
                self.con.execute(
                    f"CREATE TEMP TABLE {table} AS SELECT * FROM {self._db}.main.{table} "
                    "WHERE mpid IN (SELECT mpid FROM eval_candidates)"
                ).fetchall()
        for journey in plan.journeys:
            self._evaluate_root(journey, now, scoped, cause, result)
        for group in plan.groups:
            self._evaluate_group(group, plan, now, scoped, cause, result)
        self._set_timers(plan, now, scoped)
        self._drop_scope_copies()

    def _apply_calculated(self, plan: _Plan, now: int, cause: str, result: EvalResult) -> None:
        """A full calculation done by the calculator: its final membership, applied step by step.

        Each audience is written by exactly one step, so the calculator's final rows restricted to
        a step's audiences are that step's new members; applying them in step order gives the same
        entry times and change log as evaluating here.
        """
        assert self.calculator is not None
        self.con.execute("DELETE FROM eval_candidates").fetchall()
        self._drop_scope_copies()
        path = self.calculator.calculate(self.con, plan, now, self.settings)
        source = "read_parquet(" + to_sql(exp.convert(path)) + ")"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE eval_calculated AS SELECT audience_id, mpid FROM {source}"
        ).fetchall()
        try:
            for step in steps(plan, now, self.settings.lookback_ms, self.settings.lifetime_ms, DUCKDB):
                self.con.execute("DELETE FROM eval_new").fetchall()
                if step.writes:
                    self.con.execute(
                        "INSERT INTO eval_new SELECT audience_id, mpid FROM eval_calculated "
                        "WHERE list_contains(?::BIGINT[], audience_id)",
                        [list(step.writes)],
                    ).fetchall()
                self._apply_diff(list(step.writes), now, False, cause, result)
        finally:
            self.con.execute("DROP TABLE IF EXISTS eval_calculated").fetchall()
        self._set_timers(plan, now, False)

    def _drop_scope_copies(self) -> None:
        for table in SCOPED_TABLES:
            self.con.execute(f"DROP TABLE IF EXISTS temp.main.{table}").fetchall()

    def _fill(self, table: str, mpids: Sequence[int]) -> None:
        self.con.register("t_fill", pa.table({"mpid": pa.array(list(mpids), pa.int64())}))
        try:
            self.con.execute(f"INSERT INTO {table} SELECT DISTINCT mpid FROM t_fill").fetchall()
        finally:
            self.con.unregister("t_fill")

    def _scope(self, column: str, scoped: bool) -> str:
        return f" AND {column} IN (SELECT mpid FROM eval_candidates)" if scoped else ""

    def _evaluate_root(
        self, journey: JourneyRows, now: int, scoped: bool, cause: str, result: EvalResult
    ) -> None:
        con = self.con
        con.execute("DELETE FROM eval_new").fetchall()
        candidates = "eval_candidates" if scoped else None
        query = root_query(journey, now, self.settings.lifetime_ms, DUCKDB, candidates)
        con.execute(f"INSERT INTO eval_new {to_sql(query)}").fetchall()
        self._apply_diff([root_audience_id(journey.id)], now, scoped, cause, result)

    def _evaluate_group(
        self, group: SiblingGroup, plan: _Plan, now: int, scoped: bool, cause: str, result: EvalResult
    ) -> None:
        for step in group_steps(group, plan, now, self.settings.lookback_ms, DUCKDB):
            self._run_step(step, now, scoped, cause, result)

    def _run_step(self, step: Step, now: int, scoped: bool, cause: str, result: EvalResult) -> None:
        con = self.con
        if step.parent is not None:
            con.execute("DELETE FROM eval_parent").fetchall()
            con.execute(
                "INSERT INTO eval_parent SELECT mpid FROM memberships WHERE audience_id = ?"
                + self._scope("mpid", scoped),
                [step.parent],
            ).fetchall()
        con.execute("DELETE FROM eval_new").fetchall()
        if step.query is not None:
            con.execute(f"INSERT INTO eval_new {to_sql(step.query)}").fetchall()
        self._apply_diff(list(step.writes), now, scoped, cause, result)

    def _apply_diff(
        self, audience_ids: list[int], now: int, scoped: bool, cause: str, result: EvalResult
    ) -> None:
        """Write the difference between `eval_new` and stored membership of these audiences."""
        con = self.con
        scope = self._scope("m.mpid", scoped)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE eval_adds AS SELECT n.audience_id, n.mpid FROM eval_new n "
            "WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.audience_id = n.audience_id AND m.mpid = n.mpid)"
        ).fetchall()
        con.execute(
            "CREATE OR REPLACE TEMP TABLE eval_removes AS SELECT m.audience_id, m.mpid FROM memberships m "
            "WHERE list_contains(?::BIGINT[], m.audience_id)" + scope + " AND NOT EXISTS "
            "(SELECT 1 FROM eval_new n WHERE n.audience_id = m.audience_id AND n.mpid = m.mpid)",
            [audience_ids],
        ).fetchall()
        adds = con.execute("SELECT count(*) FROM eval_adds").fetchall()[0][0]
        removes = con.execute("SELECT count(*) FROM eval_removes").fetchall()[0][0]
        if removes:
            con.execute(
                "DELETE FROM memberships WHERE EXISTS (SELECT 1 FROM eval_removes r "
                "WHERE r.audience_id = memberships.audience_id AND r.mpid = memberships.mpid)"
            ).fetchall()
        if adds:
            con.execute(
                "INSERT INTO memberships SELECT audience_id, mpid, ? FROM eval_adds", [now]
            ).fetchall()
        for table, action in (("eval_removes", "remove"), ("eval_adds", "add")):
            n = con.execute(
                f"INSERT INTO membership_changes SELECT ? + row_number() OVER (ORDER BY audience_id, mpid), "
                f"audience_id, mpid, ?, ?, ?, ? FROM {table} WHERE audience_id > 0",
                [self._seq, action, now, cause, self.clock.now_ms()],
            ).fetchall()[0][0]
            self._seq += int(n)
        if all(a > 0 for a in audience_ids):  # journey roots are bookkeeping, not audiences
            result.adds += int(adds)
            result.removes += int(removes)
            if adds or removes:
                for a, n_add, n_remove in con.execute(
                    "SELECT audience_id, sum(CASE WHEN k = 'a' THEN 1 ELSE 0 END), "
                    "sum(CASE WHEN k = 'r' THEN 1 ELSE 0 END) FROM (SELECT audience_id, 'a' AS k FROM eval_adds "
                    "UNION ALL SELECT audience_id, 'r' FROM eval_removes) GROUP BY audience_id"
                ).fetchall():
                    prev = result.per_audience.get(int(a), (0, 0))
                    result.per_audience[int(a)] = (prev[0] + int(n_add), prev[1] + int(n_remove))

    def _set_timers(self, plan: _Plan, now: int, scoped: bool) -> None:
        """Each user's next instant of possible change: one grouped pass per source, no cross joins."""
        con = self.con
        b = plan.boundaries
        con.execute("DELETE FROM timers WHERE true" + self._scope("mpid", scoped)).fetchall()
        if b is None or not plan.journeys:
            return
        now = int(now)
        durations = sorted(int(d) for d in b.durations_ms)
        # For each duration d, the earliest t with t + d > now is the next boundary it gives.
        events = ", ".join(f"min(ts) FILTER (WHERE ts > {now - d}) + {d}" for d in durations)

        def later(column: str) -> str:
            return ", ".join(f"CASE WHEN {column} + {d} > {now} THEN {column} + {d} END" for d in durations)

        parts = [
            f"SELECT mpid, least({events}) AS b FROM events WHERE ts > {now - max(durations)}"
            + self._scope("mpid", scoped)
            + " GROUP BY mpid",
            f"SELECT mpid, least({later('last_seen')}, {later('first_seen')}) FROM users WHERE true"
            + self._scope("mpid", scoped),
            f"SELECT mpid, min(least({later('entered_at')})) FROM memberships WHERE true"
            + self._scope("mpid", scoped)
            + " GROUP BY mpid",
        ]
        for attribute, duration in sorted(b.attribute_durations):
            value = DUCKDB.json_get(exp.column("attributes"), attribute)
            text = DUCKDB.json_text(value)
            as_ms = exp.Coalesce(
                this=DUCKDB.iso_epoch_ms(text),
                expressions=[exp.TryCast(this=text, to=exp.DataType.build("BIGINT"))],
            )
            parts.append(
                f"SELECT mpid, {to_sql(as_ms)} + {int(duration)} FROM users WHERE true"
                + self._scope("mpid", scoped)
            )
        union = " UNION ALL ".join(parts)
        con.execute(
            f"INSERT INTO timers SELECT mpid, min(b) FROM ({union}) t(mpid, b) WHERE b > {now} GROUP BY mpid"
        ).fetchall()

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
