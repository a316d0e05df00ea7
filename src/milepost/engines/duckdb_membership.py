"""Membership state in the embedded store: current members, the change log (outbox), user timers.

`changed_at` is the instant the change takes effect (a timer's boundary, a batch's evaluation);
`recorded_at` is the clock when it was written, so lateness shows. Written only by the audience engine, on its own connection, one transaction per evaluation, so a
membership and the change that produced it are always stored together.
"""

from __future__ import annotations

MEMBERSHIP_DDL = [
    """CREATE TABLE IF NOT EXISTS memberships (
        audience_id BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        entered_at BIGINT NOT NULL,
        PRIMARY KEY (audience_id, mpid))""",
    """CREATE TABLE IF NOT EXISTS membership_changes (
        seq BIGINT NOT NULL,
        audience_id BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        action VARCHAR NOT NULL,
        changed_at BIGINT NOT NULL,
        cause VARCHAR NOT NULL,
        recorded_at BIGINT NOT NULL)""",
    # One row per user (the engine deletes a user's row before writing it). No key: nothing looks
    # a user up by it, and a full calculation rewriting every row paid most of its timer time
    # maintaining the index.
    "CREATE TABLE IF NOT EXISTS timers (mpid BIGINT NOT NULL, due_at BIGINT NOT NULL)",
]

# Scratch tables of one evaluation; TEMP, so they live in the engine's connection only.
SCRATCH_DDL = [
    "CREATE TEMP TABLE IF NOT EXISTS eval_candidates (mpid BIGINT)",
]
