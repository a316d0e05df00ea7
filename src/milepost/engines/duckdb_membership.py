"""Membership state in the embedded store: current members, the change log (outbox), user timers.

`changed_at` is the instant the change takes effect (a timer's boundary, a batch's evaluation);
`recorded_at` is the clock when it was written, so lateness shows. Written only by the audience engine, on its own connection, one transaction per evaluation, so a
membership and the change that produced it are always stored together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb

# One row per (audience, user), kept so by the engine (each step yields a user once per audience).
# No key: nothing looks a row up by it, and maintaining the index cost a full calculation writing
# a million rows about as much again as the insert, and its commit more.
MEMBERSHIP_COLUMNS = "audience_id BIGINT NOT NULL, mpid BIGINT NOT NULL, entered_at BIGINT NOT NULL"

# The change log's text columns hold a few known values: as ENUMs a full calculation writing a
# million changes spent a fifth less on the log than with VARCHARs. Readers see the same strings.
CHANGE_ACTIONS = ("add", "remove")
CHANGE_CAUSES = ("ingest", "timer", "full", "calculation", "edit", "preview")


def _enum(values: tuple[str, ...]) -> str:
    return "ENUM(" + ", ".join(f"'{v}'" for v in values) + ")"


MEMBERSHIP_DDL = [
    f"CREATE TABLE IF NOT EXISTS memberships ({MEMBERSHIP_COLUMNS})",
    f"""CREATE TABLE IF NOT EXISTS membership_changes (
        seq BIGINT NOT NULL,
        audience_id BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        action {_enum(CHANGE_ACTIONS)} NOT NULL,
        changed_at BIGINT NOT NULL,
        cause {_enum(CHANGE_CAUSES)} NOT NULL,
        recorded_at BIGINT NOT NULL)""",
    # One row per user (the engine deletes a user's row before writing it). No key: nothing looks
    # a user up by it, and a full calculation rewriting every row paid most of its timer time
    # maintaining the index.
    "CREATE TABLE IF NOT EXISTS timers (mpid BIGINT NOT NULL, due_at BIGINT NOT NULL)",
]

# A store written before memberships lost their key: the table rebuilt without it, rows kept.
MEMBERSHIP_KEYED = (
    "SELECT count(*) FROM duckdb_constraints() WHERE database_name = current_database() "
    "AND schema_name = 'main' AND table_name = 'memberships' AND constraint_type = 'PRIMARY KEY'"
)
MEMBERSHIP_UNKEY = [
    f"CREATE TABLE memberships_unkeyed ({MEMBERSHIP_COLUMNS})",
    "INSERT INTO memberships_unkeyed SELECT audience_id, mpid, entered_at FROM main.memberships",
    "DROP TABLE main.memberships",
    "ALTER TABLE memberships_unkeyed RENAME TO memberships",
]


def log_changes_sql(changes: str, after_seq: int, changed_at: int, cause_sql: str, recorded_at: int) -> str:
    """Append the `changes` table (step, added, audience_id, mpid) to the change log, numbered after
    `after_seq`. The values are literals, so the statement can go in a script. Step by step; within a step
    removes first, then adds, each in (audience, user) order: the rows sorted once, then numbered
    by `row_number() OVER ()`, which keeps its input's order. Numbering in a window per (step,
    action, audience) ordered by user cost 1.2x the CPU on rows already in user order, 2x otherwise.
    The sort carries only the key columns; the others are added after numbering (carrying them
    through the sort cost a million-row log a third more CPU)."""
    return (
        f"INSERT INTO membership_changes SELECT {int(after_seq)} + row_number() OVER (), audience_id, mpid, "
        f"CASE WHEN added THEN 'add' ELSE 'remove' END, {int(changed_at)}, {cause_sql}, {int(recorded_at)} "
        "FROM (SELECT audience_id, mpid, "
        f"added FROM {changes} WHERE audience_id > 0 ORDER BY step, added, audience_id, mpid)"
    )


def log_entries_sql(
    audiences: Sequence[int], after_seq: int, changed_at: int, cause_sql: str, recorded_at: int
) -> str:
    """Append the memberships of `audiences` to the change log as adds, in the order
    `log_changes_sql` gives an evaluation whose only changes they are (every member of each entered
    by one step): `audiences` listed in step order, then by user. The values as `log_changes_sql`'s.
    Sorting on (place in the list, user) instead of (step, action, audience, user) cost a million
    entries' log about a quarter less CPU."""
    rank = " ".join(f"WHEN {int(a)} THEN {i}" for i, a in enumerate(audiences))
    return (
        f"INSERT INTO membership_changes SELECT {int(after_seq)} + row_number() OVER (), audience_id, mpid, 'add', "
        f"{int(changed_at)}, {cause_sql}, {int(recorded_at)} "
        f"FROM (SELECT audience_id, mpid FROM memberships WHERE list_contains({_id_list(audiences)}, audience_id) "
        f"ORDER BY CASE audience_id {rank} END, mpid)"
    )


def entries_with_changes_sql(changes: str, steps: Mapping[int, int]) -> str:
    """The `changes` table (as `log_changes_sql` reads it) together with the memberships of the
    audiences in `steps` as adds, each at its step: audiences a step entered straight into
    memberships, beside other steps' diffs."""
    step = " ".join(f"WHEN {int(a)} THEN {int(n)}" for a, n in steps.items())
    return (
        f"(SELECT step, audience_id, mpid, added FROM {changes} UNION ALL SELECT CASE audience_id {step} END, "
        f"audience_id, mpid, true FROM memberships WHERE list_contains({_id_list(list(steps))}, audience_id))"
    )


def _id_list(audiences: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(a)) for a in audiences) + "]::BIGINT[]"


# A store whose change log was written with text columns: converted in place, rows kept.
LOG_AS_TEXT = (
    "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
    "AND schema_name = 'main' AND table_name = 'membership_changes' "
    "AND column_name IN ('action', 'cause') AND data_type = 'VARCHAR'"
)
LOG_TO_ENUMS = [
    f"ALTER TABLE membership_changes ALTER action TYPE {_enum(CHANGE_ACTIONS)}",
    f"ALTER TABLE membership_changes ALTER cause TYPE {_enum(CHANGE_CAUSES)}",
]


# Scratch tables of one evaluation; TEMP, so they live in the engine's connection only.
SCRATCH_DDL = [
    "CREATE TEMP TABLE IF NOT EXISTS eval_candidates (mpid BIGINT)",
]


def ensure_membership_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the engine's tables, and bring a store's tables written before to today's form
    (memberships without a key, the change log's ENUM columns)."""
    for ddl in MEMBERSHIP_DDL + SCRATCH_DDL:
        con.execute(ddl).fetchall()
    for check, statements in ((MEMBERSHIP_KEYED, MEMBERSHIP_UNKEY), (LOG_AS_TEXT, LOG_TO_ENUMS)):
        if not int(con.execute(check).fetchall()[0][0]):
            continue
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            for statement in statements:
                con.execute(statement).fetchall()
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
