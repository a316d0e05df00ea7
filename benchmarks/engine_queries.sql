-- Hand-written DuckDB queries for the five representative audiences of benchmarks/engine.py.
--
-- Each query answers the same question as the engine's full calculation of a journey holding
-- just that audience: the journey root (users seen within the profile lifetime who sent data
-- through input 1) intersected with the criteria, over the same `events` view (hot table and
-- sealed Parquet segments), counting only input 1's events within the 90-day lookback.
-- Each returns (audience, mpid) rows; the benchmark materialises them into a temp table and
-- checks the member counts against the engine's.
--
-- Parameters: $now (ms), $lifetime (ms), $lookback (ms). Sections start with "-- name: ".

-- name: q1_event_count_window
-- (i) at least 2 watch_content events in the last 7 days
SELECT 1 AS audience, u.mpid
FROM users u
JOIN (
    SELECT mpid FROM events
    WHERE input_id = 1 AND event_type = 'custom_event' AND name_lc = 'watch_content'
      AND ts > $now - 604800000 AND ts <= $now
    GROUP BY mpid HAVING count(*) >= 2
) e ON e.mpid = u.mpid
WHERE u.last_seen > $now - $lifetime AND list_contains(u.inputs, 1);

-- name: q2_purchase_sum
-- (ii) sum of purchase total_amount above 100 in the last 30 days
SELECT 2 AS audience, u.mpid
FROM users u
JOIN (
    SELECT mpid FROM events
    WHERE input_id = 1 AND event_type = 'commerce_event' AND action = 'purchase'
      AND ts > $now - 2592000000 AND ts <= $now
    GROUP BY mpid HAVING sum(total_amount) > 100
) e ON e.mpid = u.mpid
WHERE u.last_seen > $now - $lifetime AND list_contains(u.inputs, 1);

-- name: q3_attribute_consent
-- (iii) user attribute plan = paid (case-insensitive) and GDPR marketing consented
SELECT 3 AS audience, u.mpid
FROM users u
JOIN consents c ON c.mpid = u.mpid AND c.regulation = 'gdpr' AND c.purpose = 'marketing' AND c.consented
WHERE u.last_seen > $now - $lifetime AND list_contains(u.inputs, 1)
  AND lower(json_extract_string(u.attributes, '$.plan')) = 'paid';

-- name: q4_sequence_not_completed
-- (iv) an add_to_cart in the lookback not followed by a purchase within 1 day (and the day elapsed)
SELECT 4 AS audience, u.mpid
FROM users u
JOIN (
    SELECT DISTINCT mpid FROM (
        SELECT mpid, action, ts,
               count(*) FILTER (WHERE action = 'purchase') OVER (
                   PARTITION BY mpid ORDER BY ts RANGE BETWEEN 1 FOLLOWING AND 86400000 FOLLOWING
               ) AS purchases_next_day
        FROM events
        WHERE input_id = 1 AND event_type = 'commerce_event' AND action IN ('add_to_cart', 'purchase')
          AND ts > $now - $lookback AND ts <= $now
    ) s
    WHERE action = 'add_to_cart' AND ts + 86400000 <= $now AND purchases_next_day = 0
) e ON e.mpid = u.mpid
WHERE u.last_seen > $now - $lifetime AND list_contains(u.inputs, 1);

-- name: q5_four_milestones
-- (v) root -> [A: >= 3 watch_content in 30 d | B: >= 1 purchase in 30 d | R: remaining],
--     A -> C: >= 1 open_email in 7 d.  Audiences 51 (A), 52 (B), 53 (R), 54 (C).
WITH root AS (
    SELECT mpid FROM users WHERE last_seen > $now - $lifetime AND list_contains(inputs, 1)
), agg AS (
    SELECT mpid,
           count(*) FILTER (WHERE event_type = 'custom_event' AND name_lc = 'watch_content') AS w30,
           count(*) FILTER (WHERE event_type = 'commerce_event' AND action = 'purchase') AS p30,
           count(*) FILTER (WHERE event_type = 'custom_event' AND name_lc = 'open_email'
                            AND ts > $now - 604800000) AS o7
    FROM events
    WHERE input_id = 1 AND ts > $now - 2592000000 AND ts <= $now
    GROUP BY mpid
), t AS (
    SELECT r.mpid, coalesce(a.w30, 0) >= 3 AS in_a, coalesce(a.p30, 0) >= 1 AS in_b, coalesce(a.o7, 0) >= 1 AS in_c
    FROM root r LEFT JOIN agg a ON a.mpid = r.mpid
)
SELECT CASE WHEN in_a THEN 51 WHEN in_b THEN 52 ELSE 53 END AS audience, mpid FROM t
UNION ALL
SELECT 54 AS audience, mpid FROM t WHERE in_a AND in_c;
