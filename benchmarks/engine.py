"""Audience engine: full calculation, real time, timers and memory, printed side by side in one run.

One run, on this machine (the HTTP client shares the server's cores):
  1. full calculation of 5 representative audiences through `AudienceEngine.full_calculation`
     (each on a journey holding just that audience, memberships reset before each run), next to
     the hand-written DuckDB queries of benchmarks/engine_queries.sql on the same connection;
  2. real time: a `milepost serve` process on the bulk-loaded data with 50 maintained audiences,
     `/v2/bulkevents` at a target rate from a client process; latency from each request's 202 to
     the membership change it causes. The audiences are activated to a file output, and the
     load starts once the server has finished their initial sync (its time is printed);
  3. timers: lateness of time-driven transitions spread over the run, users/s of a mass boundary,
     and catch-up after a restart that left timers overdue;
  4. the server's peak RSS.

The workload is bulk-loaded straight into a fresh store with DuckDB SQL (deterministic
pseudo-random expressions over `range()`), then sealed into a Parquet segment as the server's
maintenance does within a minute, so the store has the steady-state layout (the segment is what
Spark reads; the embedded engine reads the events table either way).

How latency is read: the server lists its recent evaluations (`GET /api/v1/evaluations`), each
with the change log rows it wrote and when its transaction had committed; a probe's change was
recorded when the evaluation that wrote it committed. Two bounds are printed beside it, as earlier
runs gave them: the change's stamp (`changed_at`, the evaluation's start) and the next ingest
evaluation's stamp (evaluations run one at a time). The same listing gives how long the
evaluations under load took from their start to their commit: a batch waits for the evaluation
under way, then for its own. And how much of that the evaluator thread spent on a core, and ready
but waiting for one: the rest it was blocked. The server's CPU is also split by thread, by the
names its threads carry to the operating system (`/proc/<pid>/task/*/stat`).

Usage: python benchmarks/engine.py [--users N] [--quick] [--rate EVENTS_PER_S] [--seconds S] [--full-only]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.clock import ManualClock
from milepost.engines.duckdb import DuckDBStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.loadgen import send_at_rate
from tests.support.server import Server, free_port, init_data_dir

DAY = 86_400_000
LOOKBACK = 90 * DAY
LIFETIME = 90 * DAY
QUERIES = Path(__file__).with_name("engine_queries.sql")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


# ---- workload ------------------------------------------------------------------------------------


def bulk_load(con: duckdb.DuckDBPyConnection, users: int, now: int) -> dict[str, int]:
    """Users 1..N with 5-15 events each over the last 45 days; deterministic. The events are stored
    in time order, as ingest stores them: stored user by user, a read of a few users' events skips
    most of the table, which a server's store does not allow."""
    con.execute("BEGIN TRANSACTION")
    con.execute(
        f"""
        INSERT INTO users
        SELECT u + 1, {now - 120 * DAY}, {now - 60 * DAY} - (hash(u, 11) % {30 * DAY})::BIGINT,
               {now} - (hash(u, 12) % {3 * DAY})::BIGINT, [1],
               json_object('plan', CASE WHEN (hash(u, 13) % 10)::BIGINT < 3 THEN 'paid' ELSE 'free' END,
                           'country', ['US', 'GB', 'FR', 'DE', 'BR', 'IN'][1 + (hash(u, 14) % 6)::BIGINT]),
               {now}
        FROM range({users}) t(u)
        """
    )
    con.execute(
        f"""
        INSERT INTO consents
        SELECT u + 1, 'gdpr', 'marketing', (hash(u, 21) % 4)::BIGINT <> 0, {now - 10 * DAY}, {now - 10 * DAY},
               'privacy-v1', 'web', NULL
        FROM range({users}) t(u) WHERE (hash(u, 20) % 2)::BIGINT = 0
        """
    )
    con.execute(
        f"""
        INSERT INTO events
        WITH g AS (SELECT u, unnest(range(5 + ((hash(u, 1) % 11)::BIGINT)::BIGINT)) AS k FROM range({users}) t(u)),
        h AS (SELECT u, k, (hash(u, k, 2) % 100)::BIGINT AS kind, {now} - (hash(u, k, 3) % {45 * DAY})::BIGINT AS ts,
                     hash(u, k, 4) AS h4 FROM g)
        SELECT row_number() OVER (ORDER BY ts, u, k) AS event_id, u + 1, 1,
               CASE WHEN kind < 63 THEN 'custom_event' ELSE 'commerce_event' END,
               CASE WHEN kind < 40 THEN 'watch_content' WHEN kind < 60 THEN 'open_email'
                    WHEN kind < 63 THEN 'sign_up' END AS name,
               CASE WHEN kind < 40 THEN 'watch_content' WHEN kind < 60 THEN 'open_email'
                    WHEN kind < 63 THEN 'sign_up' END,
               CASE WHEN kind < 40 THEN 'media' WHEN kind < 63 THEN 'other' END,
               CASE WHEN kind >= 83 THEN 'purchase' WHEN kind >= 63 THEN 'add_to_cart' END,
               false, false, ts, ts,
               CASE WHEN kind >= 83 THEN ((h4 % 20000) / 100)::DECIMAL(38, 9) END,
               CASE WHEN kind >= 83 THEN 'T' || (h4 % 1000000000)::VARCHAR END,
               CASE WHEN kind >= 63 THEN 'USD' END, NULL,
               '{{}}', '[]', NULL, '{{}}'
        FROM h ORDER BY event_id
        """
    )
    con.execute("COMMIT")
    row = con.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events), (SELECT count(*) FROM consents)"
    ).fetchall()[0]
    return {"users": int(row[0]), "events": int(row[1]), "consents": int(row[2])}


def load_store(store_dir: Path, users: int, now: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = DuckDBStore(store_dir)
    counts = bulk_load(store.connect(), users, now)
    t1 = time.perf_counter()
    store.seal(min_rows=1)  # the steady-state layout: maintenance seals events every minute
    t2 = time.perf_counter()
    store.close()
    return {**counts, "load_s": t1 - t0, "seal_s": t2 - t1}


# ---- 1. full calculation vs hand-written SQL -------------------------------------------------------


def ev(name: str, *, n: int = 1, days: int | None = None, op: str = "greater_or_equal") -> dict[str, Any]:
    leaf: dict[str, Any] = {
        "type": "event",
        "event": {"event_type": "custom_event", "name": name},
        "having": {"fn": "count", "op": op, "value": n},
    }
    if days is not None:
        leaf["window"] = {"last": {"amount": days, "unit": "days"}}
    return leaf


def commerce(action: str, having: dict[str, Any] | None = None, days: int | None = None) -> dict[str, Any]:
    leaf: dict[str, Any] = {"type": "event", "event": {"event_type": "commerce_event", "action": action}}
    if having:
        leaf["having"] = having
    if days is not None:
        leaf["window"] = {"last": {"amount": days, "unit": "days"}}
    return leaf


CART_ABANDON = {
    "type": "sequence",
    "first": {"event_type": "commerce_event", "action": "add_to_cart"},
    "then": {"event_type": "commerce_event", "action": "purchase"},
    "within": {"amount": 1, "unit": "days"},
    "completed": False,
}
PAID_CONSENTED = {
    "all": [
        {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "paid"},
        {"type": "consent", "regulation": "gdpr", "purpose": "marketing", "state": "consented"},
    ]
}


def ms(
    mid: int, aud: int, crit: dict[str, Any] | None, parent: int | None = None, pos: int = 0
) -> MilestoneRow:
    return MilestoneRow(mid, 1, parent, pos, f"m{mid}", aud, crit, crit is None)


REPRESENTATIVE: list[tuple[str, str, tuple[MilestoneRow, ...]]] = [
    ("(i) >= 2 watch_content in 7 d", "q1_event_count_window", (ms(1, 1, ev("watch_content", n=2, days=7)),)),
    (
        "(ii) purchases sum > 100 in 30 d",
        "q2_purchase_sum",
        (
            ms(
                1,
                2,
                commerce(
                    "purchase",
                    {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 100},
                    30,
                ),
            ),
        ),
    ),
    ("(iii) plan = paid AND GDPR marketing", "q3_attribute_consent", (ms(1, 3, PAID_CONSENTED),)),
    ("(iv) add_to_cart, no purchase in 1 d", "q4_sequence_not_completed", (ms(1, 4, CART_ABANDON),)),
    (
        "(v) 4 milestones (2 siblings+rest+child)",
        "q5_four_milestones",
        (
            ms(1, 51, ev("watch_content", n=3, days=30), pos=0),
            ms(2, 52, commerce("purchase", {"fn": "count", "op": "greater_or_equal", "value": 1}, 30), pos=1),
            ms(3, 53, None, pos=2),
            ms(4, 54, ev("open_email", n=1, days=7), parent=1),
        ),
    ),
]


def load_queries() -> dict[str, str]:
    out: dict[str, str] = {}
    name = None
    for line in QUERIES.read_text().splitlines():
        m = re.match(r"--\s*name:\s*(\S+)", line)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name is not None and not line.startswith("--"):
            out[name] += line + "\n"
    return {k: v.strip().rstrip(";") for k, v in out.items()}


class Timed:
    """Wraps engine methods on one instance to split its time (instrumentation only).

    "batches" includes the root (its query and diff run through `_run_batch` too)."""

    def __init__(self, engine: AudienceEngine) -> None:
        self.spent: dict[str, float] = {}
        for name, label in (
            ("_run_batch", "batches"),
            ("_evaluate_root", "root"),
            ("_flush", "log"),
        ):
            self._wrap(engine, name, label)

    def _wrap(self, engine: AudienceEngine, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(engine, name)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(engine, name, timed)


def reset(con: duckdb.DuckDBPyConnection) -> None:
    for t in ("memberships", "membership_changes", "timers"):
        con.execute(f"DELETE FROM {t}").fetchall()
    con.execute("CHECKPOINT").fetchall()


def step_queries(engine: AudienceEngine) -> list[str]:
    """The plan's compiled membership queries (journey roots aside), as the engine runs them."""
    compiled = engine._compiled(engine._plan)
    return [step.sql for batch in compiled.batches for step in batch if step.sql is not None]


def full_calculations(store_dir: Path, now: int, repeats: int) -> list[dict[str, Any]]:
    store = DuckDBStore(store_dir)
    con = store.connect()
    engine = AudienceEngine(con, ManualClock(now), EngineSettings(LOOKBACK, LIFETIME))
    timed = Timed(engine)
    queries = load_queries()
    params = {"now": now, "lifetime": LIFETIME, "lookback": LOOKBACK}
    results = []
    for label, qname, rows in REPRESENTATIVE:
        engine.configure([JourneyRows(1, "bench", (1,), rows)], {})
        ids = [r.audience_id for r in rows]
        eng_times, sql_times, split = [], [], {}
        for _ in range(repeats):
            reset(con)
            timed.spent.clear()
            t0 = time.perf_counter()
            engine.full_calculation(now)
            eng_times.append(time.perf_counter() - t0)
            if eng_times[-1] == min(eng_times):  # the parts of the run reported
                split = dict(timed.spent)
            t0 = time.perf_counter()
            used = {k: v for k, v in params.items() if f"${k}" in queries[qname]}
            con.execute(f"CREATE OR REPLACE TEMP TABLE hand AS {queries[qname]}", used).fetchall()
            sql_times.append(time.perf_counter() - t0)
        eng_counts = dict(
            con.execute(
                "SELECT audience_id, count(*) FROM memberships WHERE audience_id > 0 GROUP BY ALL"
            ).fetchall()
        )
        sql_counts = dict(con.execute("SELECT audience, count(*) FROM hand GROUP BY ALL").fetchall())
        # The compiled queries alone, materialised as the hand-written one is, on the memberships
        # the last run left (child steps read their parent's): the part the criteria compiler owns.
        query_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for sql in step_queries(engine):
                con.execute(f"CREATE OR REPLACE TEMP TABLE compiled AS {sql}").fetchall()
            query_times.append(time.perf_counter() - t0)
        # Planning alone (parse, bind, optimise), the fixed cost every real-time evaluation pays.
        plan_times = []
        for _ in range(max(repeats, 5)):
            t0 = time.perf_counter()
            for sql in step_queries(engine):
                con.execute(f"EXPLAIN {sql}").fetchall()
            plan_times.append(time.perf_counter() - t0)
        agree = all(eng_counts.get(a, 0) == sql_counts.get(a, 0) for a in ids)
        results.append(
            {
                "label": label,
                "engine_s": min(eng_times),
                "sql_s": min(sql_times),
                "members": sum(eng_counts.get(a, 0) for a in ids),
                "agree": agree,
                "counts": (eng_counts, sql_counts),
                "query_s": min(query_times),
                "plan_ms": min(plan_times) * 1000,
                "steps_s": split.get("batches", 0.0) - split.get("root", 0.0),
                "root_s": split.get("root", 0.0),
                "log_s": split.get("log", 0.0),
            }
        )
    reset(con)
    con.close()
    store.close()
    return results


def mass_boundary(store_dir: Path, now: int) -> dict[str, float]:
    """Every root member enters P at `now`; its child waits 1 minute: one boundary for all users."""
    store = DuckDBStore(store_dir)
    con = store.connect()
    clock = ManualClock(now)
    engine = AudienceEngine(con, clock, EngineSettings(LOOKBACK, LIFETIME))
    rows = (
        ms(1, 61, {"all": []}),
        ms(
            2,
            62,
            {"type": "parent_entry", "op": "more_than_ago", "value": {"amount": 1, "unit": "minutes"}},
            parent=1,
        ),
    )
    engine.configure([JourneyRows(1, "mass", (1,), rows)], {})
    reset(con)
    engine.full_calculation(now)
    t0 = time.perf_counter()
    res = engine.advance(now + 61_000, exact=False, max_users=10_000_000)
    secs = time.perf_counter() - t0
    flipped = con.execute("SELECT count(*) FROM memberships WHERE audience_id = 62").fetchall()[0][0]
    reset(con)
    con.close()
    store.close()
    return {"users": res.users, "flipped": int(flipped), "seconds": secs}


# ---- 2/3. real time through a real server -----------------------------------------------------------


def journey_documents() -> list[dict[str, Any]]:
    """50 maintained audiences mixing every leaf type (2 of them drive the latency probes)."""
    w = ev

    def sum_gt(v, d):
        return commerce(
            "purchase", {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": v}, d
        )

    ltv = lambda v: {"type": "calculated_attribute", "name": "ltv", "op": "greater_than", "value": v}  # noqa: E731
    aud = lambda j, m, **k: {"type": "audience", "journey": j, "milestone": m, **k}  # noqa: E731
    no_open_since = {"not": {**w("open_email"), "window": {"since_parent_entry": True}}}
    between = {**w("watch_content"), "window": {"between_ago": {"from": 7, "to": 30, "unit": "days"}}}
    return [
        {"name": "RT probe", "milestones": [{"name": "Probed", "criteria": w("bench_probe", days=1)}]},
        {
            "name": "RT tick",
            "milestones": [
                {
                    "name": "Ticked",
                    "criteria": {**w("bench_tick"), "window": {"last": {"amount": 1, "unit": "minutes"}}},
                }
            ],
        },
        {
            "name": "Engagement",
            "milestones": [
                {
                    "name": "Binge watchers",
                    "criteria": w("watch_content", n=5, days=7),
                    "children": [
                        {"name": "Recent openers", "criteria": w("open_email", days=3)},
                        {
                            "name": "No open since entering",
                            "criteria": {
                                "all": [
                                    {
                                        "type": "parent_entry",
                                        "op": "more_than_ago",
                                        "value": {"amount": 1, "unit": "days"},
                                    },
                                    no_open_since,
                                ]
                            },
                        },
                    ],
                },
                {
                    "name": "Watchers",
                    "criteria": w("watch_content", n=2, days=7),
                    "children": [{"name": "High LTV watchers", "criteria": ltv(200)}],
                },
                {"name": "Occasional", "criteria": between},
                {
                    "name": "Everyone else",
                    "remaining": True,
                    "children": [{"name": "Signed up lately", "criteria": w("sign_up", days=14)}],
                },
            ],
        },
        {
            "name": "Commerce",
            "milestones": [
                {"name": "Big spenders", "criteria": sum_gt(300, 30)},
                {
                    "name": "Buyers",
                    "criteria": commerce("purchase", days=30),
                    "children": [
                        {
                            "name": "Repeat buyers",
                            "criteria": commerce(
                                "purchase", {"fn": "count", "op": "greater_or_equal", "value": 2}
                            ),
                        },
                        {
                            "name": "Big basket",
                            "criteria": commerce(
                                "purchase",
                                {
                                    "fn": "max",
                                    "attribute": "total_amount",
                                    "op": "greater_than",
                                    "value": 150,
                                },
                            ),
                        },
                    ],
                },
                {
                    "name": "Cart abandoners",
                    "criteria": {**CART_ABANDON, "window": {"last": {"amount": 14, "unit": "days"}}},
                },
                {"name": "Checked out", "criteria": {**CART_ABANDON, "completed": True}},
                {"name": "Other shoppers", "remaining": True},
            ],
        },
        {
            "name": "Consent and profile",
            "milestones": [
                {"name": "Paid marketable", "criteria": PAID_CONSENTED},
                {
                    "name": "Consent missing",
                    "criteria": {
                        "type": "consent",
                        "regulation": "gdpr",
                        "purpose": "marketing",
                        "state": "not_present",
                    },
                },
                {
                    "name": "Not consented",
                    "criteria": {
                        "type": "consent",
                        "regulation": "gdpr",
                        "purpose": "marketing",
                        "state": "not_consented",
                    },
                },
                {
                    "name": "US or GB",
                    "criteria": {
                        "type": "user_attribute",
                        "attribute": "country",
                        "op": "in",
                        "values": ["US", "GB"],
                    },
                },
                {
                    "name": "Rest of profiles",
                    "remaining": True,
                    "children": [
                        {
                            "name": "Seen today",
                            "criteria": {
                                "type": "last_seen",
                                "op": "within_last",
                                "value": {"amount": 1, "unit": "days"},
                            },
                        },
                        {
                            "name": "Old timers",
                            "criteria": {
                                "type": "first_seen",
                                "op": "more_than_ago",
                                "value": {"amount": 70, "unit": "days"},
                            },
                        },
                    ],
                },
            ],
        },
        {
            "name": "Value tiers",
            "milestones": [
                {"name": "LTV > 1000", "criteria": ltv(1000)},
                {"name": "LTV > 500", "criteria": ltv(500)},
                {"name": "LTV > 100", "criteria": ltv(100)},
                {"name": "LTV > 0", "criteria": ltv(0)},
                {"name": "No value", "remaining": True},
            ],
        },
        {
            "name": "Cross journey",
            "milestones": [
                {
                    "name": "Watching big spenders",
                    "criteria": {"all": [aud("Commerce", "Big spenders"), w("watch_content", days=7)]},
                },
                {
                    "name": "Buyers below top tier",
                    "criteria": {
                        "all": [aud("Commerce", "Buyers"), aud("Value tiers", "LTV > 1000", member=False)]
                    },
                },
                {
                    "name": "Buyers for a day",
                    "criteria": aud("Commerce", "Buyers", member_for={"amount": 1, "unit": "days"}),
                },
                {"name": "Not cross", "remaining": True},
            ],
        },
        {
            "name": "Email fallbacks",
            "milestones": [
                {
                    "name": "Openers 30 d",
                    "criteria": w("open_email", days=30),
                    "children": [
                        {
                            "name": "No open within 2 days",
                            "criteria": {
                                "all": [
                                    {
                                        "type": "parent_entry",
                                        "op": "more_than_ago",
                                        "value": {"amount": 2, "unit": "days"},
                                    },
                                    no_open_since,
                                ]
                            },
                        },
                        {
                            "name": "Entered lately",
                            "criteria": {
                                "type": "parent_entry",
                                "op": "within_last",
                                "value": {"amount": 1, "unit": "days"},
                            },
                        },
                    ],
                },
                {
                    "name": "Non openers",
                    "remaining": True,
                    "children": [
                        {"name": "Engaged non openers", "criteria": w("watch_content", n=3, days=30)}
                    ],
                },
            ],
        },
        {
            "name": "Mixed windows",
            "milestones": [
                {"name": "Cart adders 3 d", "criteria": commerce("add_to_cart", days=3)},
                {
                    "name": "Watched 1-3 days ago",
                    "criteria": {
                        **w("watch_content"),
                        "window": {"between_ago": {"from": 1, "to": 3, "unit": "days"}},
                    },
                },
                {
                    "name": "Small purchase",
                    "criteria": commerce(
                        "purchase", {"fn": "min", "attribute": "total_amount", "op": "less_than", "value": 20}
                    ),
                },
                {
                    "name": "Avg purchase > 100",
                    "criteria": commerce(
                        "purchase",
                        {"fn": "avg", "attribute": "total_amount", "op": "greater_than", "value": 100},
                    ),
                },
                {
                    "name": "Sign up or frequent opener",
                    "criteria": {"any": [w("sign_up", days=30), w("open_email", n=4, days=30)]},
                },
                {
                    "name": "Watched in 6 h",
                    "criteria": {**w("watch_content"), "window": {"last": {"amount": 6, "unit": "hours"}}},
                },
                {"name": "No watching 30 d", "criteria": w("watch_content", n=0, days=30, op="equals")},
                {
                    "name": "Signed up, never bought",
                    "criteria": {"all": [w("sign_up"), {"not": commerce("purchase")}]},
                },
                {"name": "Has e-mail", "criteria": {"type": "identity", "identity": "email", "op": "exists"}},
                {
                    "name": "Churn risk",
                    "criteria": {
                        "type": "prediction",
                        "prediction": "churn",
                        "measure": "score",
                        "op": "greater_than",
                        "value": 0.8,
                    },
                },
                {
                    "name": "Stale",
                    "criteria": {
                        "type": "last_seen",
                        "op": "more_than_ago",
                        "value": {"amount": 2, "unit": "days"},
                    },
                },
                {"name": "Unmixed", "remaining": True},
            ],
        },
    ]


LTV = {
    "name": "ltv",
    "calculation": "sum",
    "event": {"event_type": "commerce_event", "action": "purchase"},
    "attribute": "total_amount",
}


def count_audiences(docs: list[dict[str, Any]]) -> int:
    def n(ms_: list[dict[str, Any]]) -> int:
        return sum(1 + n(m.get("children") or []) for m in ms_)

    return sum(n(d["milestones"]) for d in docs)


def create_catalog_journeys(data_dir: Path) -> tuple[dict[str, int], float]:
    """Create the calculated attribute and the journeys in the catalog, then one full calculation."""
    from milepost.config import Config
    from milepost.runtime import Runtime

    rt = Runtime.open(Config.from_env(data_dir))
    try:
        cat = rt.catalog
        cat.create_calculated_attribute(LTV)
        svc = rt.journeys
        for doc in journey_documents():
            j = cat.create_journey(doc["name"], None)
            svc._add_children(j.id, None, doc["milestones"])  # the service's create, without its refresh
        # Only calculated audiences are maintained in real time: activate every one of them.
        cat.update_settings(audience_limit=1000)
        out = cat.create_output("file", "benchmark", {"directory": str(data_dir / "outputs")})
        plan = [(m.audience_id, out.id, "active", {}, "keep") for j in svc.journeys() for m in j.milestones]
        cat.apply_connection_plan(plan, [])
        t0 = time.perf_counter()
        rt.journeys.refresh()
        full_s = time.perf_counter() - t0
        ids: dict[str, int] = {}
        for j in rt.journeys.journeys():
            for m in j.milestones:
                ids[f"{j.name}/{m.name}"] = m.audience_id
    finally:
        rt.close()
    return ids, full_s


def proc_cpu(pid: int) -> float:
    try:
        return stat_cpu(Path(f"/proc/{pid}/stat").read_text())[1]
    except OSError:
        return 0.0


def stat_cpu(stat: str) -> tuple[str, float]:
    """A process's or thread's name and CPU seconds (user + system), from its `/proc/.../stat`."""
    head, tail = stat.rsplit(")", 1)
    fields = tail.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads, by the name the OS knows them by (`thread_group`).
    The server names its own threads; the event loop, request threads and DuckDB's worker threads
    keep the process's name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name, cpu = stat_cpu((task / "stat").read_text())
        except OSError:
            continue  # the thread ended
        out[thread_group(name)] = out.get(thread_group(name), 0.0) + cpu
    return out


def thread_group(name: str) -> str:
    """Numbered threads (`delivery-3`) count together."""
    return name.rstrip("0123456789").rstrip("-")


def vm_hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# The client runs in its own process (this script with `--client`), so its CPU is measured apart.


def client_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    url, key, secret = spec["url"], spec["key"], spec["secret"]
    rate, seconds, users = spec["rate"], spec["seconds"], spec["users"]
    per_batch, batches = spec["events_per_batch"], spec["batches_per_request"]
    probe_base, tick_base, tick_until = spec["probe_base"], spec["tick_base"], spec["tick_until"]
    ticks_per_request = spec.get("ticks_per_request", 1)
    tick_lo, tick_hi = spec.get("tick_ms", [3_000, 20_000])
    events_per_request = batches * per_batch
    req_per_s = rate / events_per_request
    n_requests = int(seconds * req_per_s)
    rng = random.Random(7)
    kinds = [("custom_event", "watch_content", "media")] * 4 + [("custom_event", "open_email", "other")] * 2
    kinds += [("commerce_event", "add_to_cart", None)] * 2 + [("commerce_event", "purchase", None)]

    def event(kind: tuple[str, str, str | None], ts: int) -> dict[str, Any]:
        etype, name, cet = kind
        if etype == "custom_event":
            return {
                "event_type": etype,
                "data": {"event_name": name, "custom_event_type": cet, "timestamp_unixtime_ms": ts},
            }
        pa_: dict[str, Any] = {"action": name}
        if name == "purchase":
            pa_["total_amount"] = round(rng.random() * 200, 2)
            pa_["transaction_id"] = f"t{rng.getrandbits(48)}"
        return {"event_type": etype, "data": {"product_action": pa_, "timestamp_unixtime_ms": ts}}

    def body(i: int, now: int, elapsed: float) -> tuple[bytes, dict[str, Any]]:
        meta: dict[str, Any] = {"i": i, "probe": probe_base + i}
        out = [
            {
                "environment": "production",
                "mpid": probe_base + i,
                "events": [
                    {
                        "event_type": "custom_event",
                        "data": {
                            "event_name": "bench_probe",
                            "custom_event_type": "other",
                            "timestamp_unixtime_ms": now,
                        },
                    }
                ]
                * per_batch,
            }
        ]
        if elapsed < tick_until:
            meta["ticks"] = []
            for j in range(ticks_per_request):
                mpid = tick_base + i * ticks_per_request + j
                boundary = now + rng.randint(tick_lo, tick_hi)
                meta["ticks"].append([mpid, boundary])
                ts = boundary - 60_000
                out.append(
                    {
                        "environment": "production",
                        "mpid": mpid,
                        "events": [
                            {
                                "event_type": "custom_event",
                                "data": {
                                    "event_name": "bench_tick",
                                    "custom_event_type": "other",
                                    "timestamp_unixtime_ms": ts,
                                },
                            }
                        ]
                        * per_batch,
                    }
                )
        while len(out) < batches:
            out.append(
                {
                    "environment": "production",
                    "mpid": 1 + rng.randrange(users),
                    "events": [event(rng.choice(kinds), now) for _ in range(per_batch)],
                }
            )
        return orjson.dumps(out), meta

    records: list[dict[str, Any]] = []
    metas: dict[int, dict[str, Any]] = {}
    start = time.time()

    def make(i: int, sent: float) -> bytes:
        data, metas[i] = body(i, int(sent * 1000), sent - start)
        return data

    def done(i: int, sent: float, acked: float, status: int) -> None:
        meta = metas.pop(i)
        meta.update(sent=sent * 1000, acked=acked * 1000, status=status, events=events_per_request)
        records.append(meta)

    # A lean client: an httpx one took about half a core at 8,000 events/s, from the server it measures.
    asyncio.run(send_at_rate(url, key, secret, n_requests, req_per_s, make, done, start=start))
    Path(spec["out"]).write_text(json.dumps(records))


def change_log(store_path: Path) -> list[tuple[int, int, int, str, int, str]]:
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        return [
            (int(a), int(b), int(c), str(d), int(e), str(f))
            for a, b, c, d, e, f in con.execute(
                "SELECT seq, audience_id, mpid, action, changed_at, cause FROM membership_changes ORDER BY seq"
            ).fetchall()
        ]
    finally:
        con.close()


class Stamps:
    """Clock stamps of ingest evaluations in commit order: the bound on when earlier changes were recorded."""

    def __init__(self, log: list[tuple[int, int, int, str, int, str]]) -> None:
        seen: dict[int, int] = {}
        for seq, _a, _m, _act, at, cause in log:
            if cause == "ingest" and at not in seen:
                seen[at] = seq
        pairs = sorted((seq, at) for at, seq in seen.items())
        self.seqs = [p[0] for p in pairs]
        self.ats = [p[1] for p in pairs]

    def after_seq(self, seq: int, not_before: int) -> int | None:
        """The first ingest-evaluation stamp of a later evaluation than the one that wrote `seq`."""
        i = bisect.bisect_right(self.seqs, seq)
        while i < len(self.ats) and self.ats[i] <= not_before:
            i += 1
        return self.ats[i] if i < len(self.ats) else None


def wait_idle(pid: int, limit_s: float) -> float:
    """Wait until the server uses under 10% of a core over 2 s (its evaluator has drained); seconds waited."""
    t0 = time.time()
    while time.time() - t0 < limit_s:
        c0 = proc_cpu(pid)
        time.sleep(2)
        if proc_cpu(pid) - c0 < 0.2:
            break
    return time.time() - t0


def wait_synced(url: str, token: str, audience_ids: list[int], limit_s: float) -> float:
    """Wait until every connection of the audiences streams (its initial sync is done); seconds waited."""
    t0 = time.time()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for audience_id in audience_ids:
            while time.time() - t0 < limit_s:
                r = client.get(f"/api/v1/audiences/{audience_id}/connections")
                r.raise_for_status()
                phases = {c["delivery"]["phase"] for c in r.json()["connections"]}
                if phases <= {"stream"}:
                    break
                time.sleep(0.5)
    return time.time() - t0


def send(spec: dict[str, Any], workdir: Path, name: str, **over: Any) -> tuple[list[dict[str, Any]], float]:
    """Run one client process to the end; its records and its CPU seconds."""
    s = dict(spec, **over)
    s["out"] = str(workdir / f"{name}-out.json")
    spec_path = workdir / f"{name}.json"
    spec_path.write_text(json.dumps(s))
    proc = subprocess.Popen([sys.executable, __file__, "--client", str(spec_path)])
    cpu = 0.0
    while proc.poll() is None:
        cpu = proc_cpu(proc.pid) or cpu
        time.sleep(0.1)
    return json.loads(Path(s["out"]).read_text()), cpu


class Recorded:
    """When each change of the log was recorded: the commit time of the evaluation that wrote it,
    as the server lists its recent evaluations (`GET /api/v1/evaluations`)."""

    def __init__(self, listed: list[dict[str, Any]]) -> None:
        spans = sorted(
            (e["first_seq"], e["last_seq"], e["recorded_at"]) for e in listed if e["first_seq"] is not None
        )
        self.firsts = [s[0] for s in spans]
        self.spans = spans
        self.ingest_ats = sorted(e["at"] for e in listed if e["batches"])

    def at(self, seq: int) -> int | None:
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i >= 0 and self.spans[i][0] <= seq <= self.spans[i][1]:
            return int(self.spans[i][2])
        return None


def evaluations(url: str, token: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{url}/api/v1/evaluations", params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"}
    )
    r.raise_for_status()
    listed: list[dict[str, Any]] = r.json()["evaluations"]
    return listed


def merged(*listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluations listed at different times, each once, in commit order."""
    seen = {(e["at"], e["recorded_at"], e["first_seq"]): e for listing in listings for e in listing}
    return sorted(seen.values(), key=lambda e: e["recorded_at"])


def probe_latencies(
    records: list[dict[str, Any]], probe_rows: dict[int, tuple[int, int]], stamps: Stamps, recorded: Recorded
) -> tuple[list[float], list[float], list[float], int]:
    """Per probe, from its 202: [stamped (lower bound), recorded by (the earlier runs' upper
    bound), recorded]; and how many probes caused no change."""
    lo, hi, exact, missing = [], [], [], 0
    for r in records:
        if r["status"] != 202:
            continue
        row = probe_rows.get(r["probe"])
        if row is None:
            missing += 1
            continue
        seq, at = row
        lo.append((at - r["acked"]) / 1000)
        bound = stamps.after_seq(seq, at)
        if bound is not None:
            hi.append((bound - r["acked"]) / 1000)
        when = recorded.at(seq)
        if when is not None:
            exact.append((when - r["acked"]) / 1000)
    return lo, hi, exact, missing


def realtime(args: argparse.Namespace, workdir: Path, now: int) -> dict[str, Any]:
    data_dir = workdir / "rt"
    creds = init_data_dir(data_dir)
    t0 = time.perf_counter()
    loaded = load_store(data_dir / "store", args.users, now)
    print(
        f"  bulk load for the server: {loaded['users']:,} users, {loaded['events']:,} events in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    docs = journey_documents()
    ids, full_s = create_catalog_journeys(data_dir)
    print(
        f"  {count_audiences(docs)} audiences in {len(docs)} journeys created in the catalog; initial full calculation (in process, before serving) {full_s:.1f} s",
        flush=True,
    )
    probe_aud, tick_aud = ids["RT probe/Probed"], ids["RT tick/Ticked"]
    server = Server(data_dir, free_port(), {"MILEPOST_INPUT_RATE_LIMIT": "1000000000"})
    t_spawn = time.time()
    server.start(timeout=600)
    print(f"  server ready in {time.time() - t_spawn:.1f} s", flush=True)
    assert server.proc is not None
    spid = server.proc.pid
    u = args.users
    spec = {
        "url": server.url,
        "key": creds["input"]["key"],
        "secret": creds["input"]["secret"],
        "rate": args.rate,
        "seconds": args.seconds,
        "users": u,
        "events_per_batch": 2,
        "batches_per_request": 100,
        "probe_base": 1,
        "tick_base": u // 2,
        "tick_until": 0,
    }
    out: dict[str, Any] = {"initial_full_s": full_s}
    try:
        # Every audience is activated, so the server first syncs all their members to the output:
        # a one-off backlog (measured on its own by benchmarks/delivery.py) that phase A should not
        # be charged for. Timers keep the server busy, so wait for the connections, not for idleness.
        out["settle_s"] = wait_synced(server.url, creds["admin_token"], sorted(ids.values()), 600)
        print(
            f"  initial sync of the activated audiences done {out['settle_s']:.1f} s after ready", flush=True
        )
        # A. the target rate
        cpu0, threads0, w0 = proc_cpu(spid), thread_cpu(spid), time.time()
        load, client_cpu = send(spec, workdir, "load")
        out["wall"] = time.time() - w0
        out["server_cpu"], out["client_cpu"] = proc_cpu(spid) - cpu0, client_cpu
        out["thread_cpu"] = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(spid).items()}
        out["process_name"] = thread_group(Path(f"/proc/{spid}/comm").read_text().strip())
        # low-rate markers: their evaluations' stamps bound when the earlier changes were recorded
        send(spec, workdir, "markers-a", rate=200, seconds=args.drain_limit, probe_base=u // 8 + 300_000)
        out["drain_s"] = wait_idle(spid, 10)
        print("  phase A done", flush=True)
        listed = evaluations(server.url, creds["admin_token"])  # the server keeps the latest 1,000
        restarted: list[dict[str, Any]] = []
        steady: list[dict[str, Any]] = []
        restart_ticks: list[dict[str, Any]] = []
        if not args.load_only:
            # B. steady state at a lower rate: time-driven exits with boundaries spread 15-30 s ahead
            steady, _ = send(
                spec,
                workdir,
                "steady",
                rate=args.steady_rate,
                seconds=50,
                probe_base=u // 8,
                tick_base=u // 2,
                tick_until=15,
                ticks_per_request=10,
                tick_ms=[15_000, 30_000],
            )
            send(spec, workdir, "markers-b", rate=200, seconds=args.drain_limit, probe_base=u // 8 + 400_000)
            print("  phase B done", flush=True)
            listed = merged(listed, evaluations(server.url, creds["admin_token"]))
            out["rss_mib"] = vm_hwm_mib(spid)
            # C. restart with overdue timers: users enter, the server stops, their boundaries pass
            restart_ticks, _ = send(
                spec,
                workdir,
                "restart-ticks",
                rate=2000,
                seconds=2,
                probe_base=u // 8 + 100_000,
                tick_base=u // 4,
                tick_until=10,
                ticks_per_request=50,
                tick_ms=[20_000, 25_000],
            )
            time.sleep(15)
            server.stop()
            latest = max(b for r in restart_ticks for _m, b in r.get("ticks", []))
            time.sleep(max(0.0, (latest - time.time() * 1000) / 1000) + 5)
            t_restart = time.time()
            server.start(timeout=600)
            out["restart_ready_s"] = time.time() - t_restart
            spid = server.proc.pid
            _markers, _ = send(spec, workdir, "markers", rate=1000, seconds=15, probe_base=u // 8 + 200_000)
            wait_idle(spid, 60)
            out["rss_mib_restart"] = vm_hwm_mib(spid)
            restarted = evaluations(server.url, creds["admin_token"])
    finally:
        server.stop()
    log = change_log(data_dir / "store" / "store.duckdb")
    stamps = Stamps(log)
    probe_rows = {m: (seq, at) for seq, a, m, act, at, _c in log if a == probe_aud and act == "add"}
    tick_removes = {m: (seq, at) for seq, a, m, act, at, c in log if a == tick_aud and act == "remove"}
    tick_adds = {m for _s, a, m, act, _at, _c in log if a == tick_aud and act == "add"}
    ok = [r for r in load if r["status"] == 202]
    # Phase A's window (ms): from the first accepted request's sending to the last one's 202.
    window = (min(r["sent"] for r in ok), max(r["acked"] for r in ok)) if ok else None
    span = (window[1] - window[0]) / 1000 if window else float("nan")
    out["accepted_eps"] = sum(r["events"] for r in ok) / span if ok else 0.0
    out["requests"], out["refused"] = len(load), len(load) - len(ok)
    recorded, after_restart = Recorded(listed), Recorded(restarted)
    with_rows = [e for e in listed if e["first_seq"] is not None]
    print(
        f"  evaluations listed by the server: {len(listed)}, {len(with_rows)} writing the change log"
        + (f" (seq {with_rows[0]['first_seq']}-{with_rows[-1]['last_seq']})" if with_rows else ""),
        flush=True,
    )
    out["lat_lo"], out["lat_hi"], out["lat_rec"], out["lat_missing"] = probe_latencies(
        load, probe_rows, stamps, recorded
    )
    out["steady_lo"], out["steady_hi"], out["steady_rec"], _ = probe_latencies(
        steady, probe_rows, stamps, recorded
    )
    late, not_entered, not_fired = [], 0, 0
    for r in steady:
        for mpid, boundary in r.get("ticks", []):
            if mpid not in tick_adds:
                not_entered += 1
                continue
            row = tick_removes.get(mpid)
            if row is None:
                not_fired += 1
                continue
            when = recorded.at(row[0])
            if when is not None:
                late.append((when - boundary) / 1000)
    out.update(late=late, late_not_entered=not_entered, late_not_fired=not_fired)
    rt_mpids = [m for r in restart_ticks for m, _b in r.get("ticks", [])]
    rt_seqs = [tick_removes[m][0] for m in rt_mpids if m in tick_removes]
    out["restart_ticks"], out["restart_entered"], out["restart_removed"] = (
        len(rt_mpids),
        sum(1 for m in rt_mpids if m in tick_adds),
        len(rt_seqs),
    )
    out["catch_up_s"] = None
    if rt_seqs and not args.load_only:
        when = after_restart.at(max(rt_seqs))
        if when is not None:
            out["catch_up_s"] = when / 1000 - t_restart
    ats = recorded.ingest_ats
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(ats)]
    out["eval_gap_p50"] = pct(gaps, 50)
    out["load_evals"] = load_evaluations(listed, window) if window else []
    return out


def load_evaluations(
    listed: list[dict[str, Any]], window: tuple[int, int]
) -> list[tuple[float, int, float | None, float | None]]:
    """Phase A's evaluations of new batches, begun within its `window` (ms): (seconds from the
    evaluation's instant to its commit, users evaluated, and the evaluator thread's seconds in it on
    a core and waiting for one, None where unknown). Under load they follow each other, so a batch
    waits for the one under way, then for its own."""
    first, last = window

    def seconds(ms: int | None) -> float | None:
        return None if ms is None else ms / 1000

    return [
        (
            (e["recorded_at"] - e["at"]) / 1000,
            int(e["users"]),
            seconds(e.get("cpu_ms")),
            seconds(e.get("waiting_ms")),
        )
        for e in listed
        if e["batches"] and first <= e["at"] <= last
    ]


# ---- main -------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 users, 10 s of traffic")
    ap.add_argument("--rate", type=float, default=20_000, help="target events/s for the real-time run")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--repeats", type=int, default=2, help="full calculations per audience (best is kept)")
    ap.add_argument(
        "--steady-rate", type=float, default=1000, help="events/s of the steady-state timer phase"
    )
    ap.add_argument(
        "--drain-limit", type=float, default=90, help="seconds of low-rate markers after phases A and B"
    )
    ap.add_argument("--skip-realtime", action="store_true")
    ap.add_argument("--full-only", action="store_true", help="only section 1 (full calculation)")
    ap.add_argument("--realtime-only", action="store_true", help="only section 2 (real time)")
    ap.add_argument(
        "--load-only", action="store_true", help="with --realtime-only: phase A alone (the target rate)"
    )
    ap.add_argument("--client", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
        return
    if args.quick:
        args.users, args.seconds = 50_000, 10
    workdir = Path(tempfile.mkdtemp(prefix="milepost-engine-bench-"))
    now = int(time.time() * 1000)
    print(f"machine: {os.cpu_count()} cores, DuckDB {duckdb.__version__}; client and server share the cores")
    try:
        if args.realtime_only:
            realtime_section(args, workdir, now)
            return
        loaded = load_store(workdir / "fc", args.users, now)
        print(
            f"\nworkload: {loaded['users']:,} users, {loaded['events']:,} events, {loaded['consents']:,} consents "
            f"(bulk load {loaded['load_s']:.1f} s, sealed to Parquet {loaded['seal_s']:.1f} s)"
        )
        print(
            "\n1. full calculation: AudienceEngine.full_calculation vs hand-written DuckDB (best of "
            f"{args.repeats}; target engine within 1.5x)"
        )
        print(
            "  engine s: the whole full calculation, split into root (journey root query + diff), "
            "steps (membership queries + diff), log (the call that writes the timers and the change "
            "log: the engine sends statements whose results it does not read with the next one it "
            "reads), and other (transaction, bookkeeping); query s: the compiled membership queries alone, materialised like the "
            "hand-written SQL; plan ms: planning the compiled queries alone (EXPLAIN)"
        )
        print(
            f"  {'audience':<42}{'members':>10}{'engine s':>10}{' (root':>7}{' steps':>7}{'  log':>7}{' other)':>8}"
            f"{'query s':>9}{'SQL s':>8}{'ratio':>7}{'query':>7}{'plan ms':>8}  agree  verdict"
        )
        for r in full_calculations(workdir / "fc", now, args.repeats):
            ratio = r["engine_s"] / r["sql_s"]
            other = r["engine_s"] - r["root_s"] - r["steps_s"] - r["log_s"]
            print(
                f"  {r['label']:<42}{r['members']:>10,}{r['engine_s']:>10.2f}{r['root_s']:>7.2f}{r['steps_s']:>7.2f}"
                f"{r['log_s']:>7.2f}{other:>8.2f}{r['query_s']:>9.2f}{r['sql_s']:>8.2f}"
                f"{ratio:>6.1f}x{r['query_s'] / r['sql_s']:>6.1f}x{r['plan_ms']:>8.1f}  {'yes' if r['agree'] else 'NO ' + str(r['counts'])}   {verdict(ratio <= 1.5)}"
            )
        if args.full_only:
            return
        mb = mass_boundary(workdir / "fc", now)
        rate = mb["users"] / mb["seconds"] if mb["seconds"] else 0.0
        print(
            f"\n3b. mass boundary (in process): {mb['users']:,} users due at one instant, {mb['flipped']:,} flipped "
            f"in {mb['seconds']:.1f} s = {rate:,.0f} users/s (no target; at this rate a boundary shared by all users takes {mb['seconds']:.0f} s, against the 1 s lateness target: {verdict(mb['seconds'] <= 1)})"
        )
        shutil.rmtree(workdir / "fc", ignore_errors=True)
        if args.skip_realtime:
            return
        realtime_section(args, workdir, now)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def realtime_section(args: argparse.Namespace, workdir: Path, now: int) -> None:
    print(
        f"\n2. real time: milepost serve, {count_audiences(journey_documents())} audiences, target {args.rate:,.0f} events/s for {args.seconds:.0f} s"
    )
    rt = realtime(args, workdir, now)
    eps = rt["accepted_eps"]
    print(
        f"  accepted: {eps:,.0f} events/s sustained ({rt['requests']} requests, {rt['refused']} refused)   target {args.rate:,.0f}: {verdict(eps >= 0.95 * args.rate)}"
    )
    print(
        f"  CPU over {rt['wall']:.1f} s wall: server {rt['server_cpu']:.1f} s ({rt['server_cpu'] / rt['wall']:.0%} of a core), client {rt['client_cpu']:.1f} s ({rt['client_cpu'] / rt['wall']:.0%})"
    )
    by_thread = sorted(rt["thread_cpu"].items(), key=lambda kv: -kv[1])
    print(
        "    server CPU by thread (of a core): "
        + ", ".join(f"{name} {cpu / rt['wall']:.0%}" for name, cpu in by_thread if cpu >= 0.01 * rt["wall"])
        + f" ({rt['process_name']}: the event loop, request threads and DuckDB's workers)"
    )
    lo, hi, rec = rt["lat_lo"], rt["lat_hi"], rt["lat_rec"]
    print(
        f"  202 -> membership change recorded: p50 {pct(rec, 50):.2f} s p99 {pct(rec, 99):.2f} s ({len(rec)} probes, "
        f"{rt['lat_missing']} without a change)   target p99 < 1 s: {verdict(bool(rec) and pct(rec, 99) < 1)}\n"
        f"    bounds as the earlier runs gave them: stamped p50 {pct(lo, 50):.2f} s p99 {pct(lo, 99):.2f} s; "
        f"recorded by (next evaluation's stamp) p50 {pct(hi, 50):.2f} s p99 {pct(hi, 99):.2f} s"
    )
    if not args.load_only:
        rec = rt["steady_rec"]
        print(
            f"  same at {args.steady_rate:,.0f} events/s (phase B): recorded p50 {pct(rec, 50):.2f} s p99 {pct(rec, 99):.2f} s ({len(rec)} probes)   target p99 < 1 s: {verdict(bool(rec) and pct(rec, 99) < 1)}"
        )
    print(f"  median interval between ingest evaluations: {rt['eval_gap_p50']:.2f} s")
    spans = rt["load_evals"]
    if spans:
        took = [t for t, *_ in spans]
        print(
            f"  evaluations of new batches during the load: {len(spans)}, users p50 {pct([float(s[1]) for s in spans], 50):,.0f}; "
            f"instant to commit p50 {pct(took, 50):.2f} s, p90 {pct(took, 90):.2f} s, max {max(took):.2f} s"
        )
        cpu = [c for _, _, c, _ in spans if c is not None]
        waiting = [w for _, _, _, w in spans if w is not None]
        if cpu and waiting:
            print(
                f"    the evaluator thread in them, p50: on a core {pct(cpu, 50):.2f} s, ready but waiting for one "
                f"{pct(waiting, 50):.2f} s; the rest it was blocked (the GIL, locks, DuckDB's worker threads)"
            )
    if args.load_only:
        return
    late = rt["late"]
    print(
        f"\n3. timers (phase B, {args.steady_rate:,.0f} events/s): lateness (recorded - boundary) p50 {pct(late, 50):.2f} s p99 {pct(late, 99):.2f} s over {len(late)} boundaries "
        f"spread over 30 s ({rt['late_not_entered']} users never entered, {rt['late_not_fired']} not fired)   target p99 < 1 s: {verdict(bool(late) and pct(late, 99) < 1)}"
    )
    cu = rt["catch_up_s"]
    print(
        f"  restart with {rt['restart_entered']} of {rt['restart_ticks']} users' timers overdue: ready after {rt['restart_ready_s']:.1f} s, "
        f"{rt['restart_removed']} processed by {(f'{cu:.1f} s') if cu is not None else 'n/a'} after the restart began (no target)"
    )
    peak = max(rt["rss_mib"], rt.get("rss_mib_restart", 0.0))
    print(
        f"\n4. peak RSS of the server (VmHWM): {rt['rss_mib']:,.0f} MiB (after restart {rt.get('rss_mib_restart', float('nan')):,.0f} MiB)   target <= 4096 MiB: {verdict(peak <= 4096)}"
    )


if __name__ == "__main__":
    main()
