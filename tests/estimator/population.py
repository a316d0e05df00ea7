"""A synthetic population bulk-loaded straight into a store (users and events, docs/store-layout.md).

Everything is generated inside DuckDB from deterministic hashes of (seed, user, event, field), so a
given seed always yields the same population; MPIDs are spread over the whole signed 64-bit range
like real ones. Used by the estimator's tests and by benchmarks/estimator.py.

Users: `attributes` = {age 18-79, score 0-999 (uniform), ltv (exponential, mean 200), tier
(gold 5% / silver 20% / bronze 35% / none), country (skewed over 10), vip (2%), newsletter (40%)};
first seen up to 200 days before T0, last seen between then and T0; inputs [1] 60%, [2] 30%,
[1, 2] 10%. Events: 0-10 per user (mean `events_per_user`), over the 120 days before T0:
custom `watch` (media, attrs genre and minutes) 45%, `search` 15%, `share` 10%, screen view
`Home` 10%, session start 10%, commerce `purchase` (total_amount 0-200) 10%.
"""

from __future__ import annotations

import duckdb

DAY = 86_400_000
T0 = 1_780_315_200_000  # 2026-06-01T12:00Z
LOOKBACK = 90 * DAY
LIFETIME = 90 * DAY
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "JP"]
GENRES = ["drama", "comedy", "news", "sport", "kids"]


def _u(seed: int, *parts: str) -> str:
    """A uniform double in [0, 1) from a hash of the seed and the given SQL expressions."""
    return f"((hash({seed}, {', '.join(parts)}) % 1000000007) / 1000000007.0)"


def load_population(
    con: duckdb.DuckDBPyConnection, users: int, *, seed: int = 1, events_per_user: float = 5.0, first: int = 0
) -> None:
    """Insert users number `first` .. `first + users - 1` of this seed, with their events, in one transaction."""
    s = seed
    countries = "[" + ", ".join(f"'{c}'" for c in COUNTRIES) + "]"
    genres = "[" + ", ".join(f"'{g}'" for g in GENRES) + "]"
    max_events = max(0, round(2 * events_per_user))
    base_event = int(con.execute("SELECT coalesce(max(event_id), 0) FROM events").fetchall()[0][0])
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE gen_users AS
            SELECT i,
                (hash({s}, i, 0)::HUGEINT - 9223372036854775808)::BIGINT AS mpid,
                {T0} - CAST(floor({_u(s, "i", "8")} * 200 * {DAY}) AS BIGINT) AS first_seen,
                {_u(s, "i", "9")} AS u_last,
                CASE WHEN {_u(s, "i", "10")} < 0.6 THEN [1] WHEN {_u(s, "i", "10")} < 0.9 THEN [2]
                     ELSE [1, 2] END::INTEGER[] AS inputs,
                CAST(floor({_u(s, "i", "11")} * {max_events + 1}) AS INTEGER) AS n_events,
                json_object(
                    'age', 18 + CAST(floor({_u(s, "i", "1")} * 62) AS INTEGER),
                    'score', CAST(floor({_u(s, "i", "2")} * 1000) AS INTEGER),
                    'ltv', round(-ln(1 - {_u(s, "i", "3")}) * 200, 2),
                    'tier', CASE WHEN {_u(s, "i", "4")} < 0.05 THEN 'gold' WHEN {_u(s, "i", "4")} < 0.25
                        THEN 'silver' WHEN {_u(s, "i", "4")} < 0.6 THEN 'bronze' ELSE 'none' END,
                    'country', {countries}[1 + CAST(floor(pow({_u(s, "i", "5")}, 2) * 10) AS INTEGER)],
                    'vip', {_u(s, "i", "6")} < 0.02,
                    'newsletter', {_u(s, "i", "7")} < 0.4
                ) AS attributes
            FROM range({first}, {first + users}) t(i)
            """
        ).fetchall()
        con.execute(
            "INSERT INTO users SELECT mpid, first_seen, first_seen, "
            f"first_seen + CAST(floor(u_last * ({T0} - first_seen)) AS BIGINT), inputs, attributes, {T0} "
            "FROM gen_users"
        ).fetchall()
        v = lambda k: _u(s, "i", "j", str(100 + k))  # noqa: E731
        con.execute(
            f"""
            INSERT INTO events
            SELECT {base_event} + (i - {first}) * {max_events + 1} + j + 1 AS event_id, mpid,
                CASE WHEN len(inputs) = 1 THEN inputs[1] WHEN {v(3)} < 0.5 THEN 1 ELSE 2 END AS input_id,
                CASE WHEN k < 0.70 THEN 'custom_event' WHEN k < 0.80 THEN 'screen_view'
                     WHEN k < 0.90 THEN 'session_start' ELSE 'commerce_event' END AS event_type,
                CASE WHEN k < 0.45 THEN 'watch' WHEN k < 0.60 THEN 'search' WHEN k < 0.70 THEN 'share'
                     WHEN k < 0.80 THEN 'Home' END AS name,
                CASE WHEN k < 0.45 THEN 'watch' WHEN k < 0.60 THEN 'search' WHEN k < 0.70 THEN 'share'
                     WHEN k < 0.80 THEN 'home' END AS name_lc,
                CASE WHEN k < 0.45 THEN 'media' WHEN k < 0.70 THEN 'other' END AS custom_event_type,
                CASE WHEN k >= 0.90 THEN 'purchase' END AS action,
                false, false, ts, ts AS received_at,
                CASE WHEN k >= 0.90 THEN round({v(4)} * 200, 2)::DECIMAL(38, 9) END AS total_amount,
                NULL, CASE WHEN k >= 0.90 THEN 'USD' END, NULL,
                CASE WHEN k < 0.45 THEN json_object('genre', {genres}[1 + CAST(floor({v(5)} * 5) AS INTEGER)],
                    'minutes', CAST(floor({v(6)} * 120) AS INTEGER)) ELSE '{{}}' END::JSON AS attrs,
                '[]'::JSON, NULL, '{{}}'::JSON
            FROM (
                SELECT i, j, mpid, inputs, {v(1)} AS k,
                    {T0} - CAST(floor({v(2)} * 120 * {DAY}) AS BIGINT) AS ts
                FROM (SELECT i, mpid, inputs, unnest(range(n_events)) AS j FROM gen_users)
            )
            """
        ).fetchall()
        con.execute("DROP TABLE gen_users").fetchall()
        con.execute("COMMIT").fetchall()
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
