"""Audience credits (SPEC §2): an audience with at least one active connection is activated and
consumes one credit, and the account's `audience_limit` caps how many are.

Every transaction that may activate audiences or change the limit starts with `lock_credits`, so
such transactions run one at a time and the counts they read stay true until they commit.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from milepost.catalog.records import AccountSettings
from milepost.catalog.tables import AccountSettingsRow, ConnectionRow
from milepost.errors import CreditLimitReached

SETTINGS_ID = 1


def lock_credits(session: Session) -> AccountSettingsRow:
    """Take the account's credit lock and return its settings row; call it first in a transaction.

    A write is the one lock that works alike on both databases: on PostgreSQL the UPDATE holds the
    settings row's lock until the transaction ends; on SQLite it opens the write transaction, which
    excludes every other writer, in this process or another. Being the first statement, it leaves no
    older snapshot behind, so everything read after it is current.
    """
    session.execute(
        update(AccountSettingsRow)
        .where(AccountSettingsRow.id == SETTINGS_ID)
        .values(audience_limit=AccountSettingsRow.audience_limit)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    row = session.get(AccountSettingsRow, SETTINGS_ID)
    if row is None:
        # Only a catalog whose settings row was removed by hand gets here; put the defaults back.
        row = default_settings_row()
        session.add(row)
        session.flush()
    return row


def default_settings_row() -> AccountSettingsRow:
    defaults = AccountSettings()
    return AccountSettingsRow(
        id=SETTINGS_ID,
        audience_limit=defaults.audience_limit,
        lookback_days=defaults.lookback_days,
        profile_lifetime_days=defaults.profile_lifetime_days,
        retention_days=defaults.retention_days,
        request_dedupe_days=defaults.request_dedupe_days,
        message_dedupe_days=defaults.message_dedupe_days,
        updated_at=0,
    )


def activated_audience_ids(session: Session) -> set[int]:
    """The audiences with at least one active connection."""
    query = select(ConnectionRow.audience_id).where(ConnectionRow.status == "active").distinct()
    return set(session.scalars(query))


def activated_count(session: Session) -> int:
    """How many audiences are activated, i.e. how many credits are in use."""
    query = select(func.count(ConnectionRow.audience_id.distinct())).where(ConnectionRow.status == "active")
    return session.scalar(query) or 0


def ensure_within_limit(session: Session, limit: int, before: int, refused: str) -> None:
    """Raise CreditLimitReached if the changes made in this transaction (already flushed) brought
    the activated audiences over `limit`; `before` is the count when the transaction took the lock.

    A change that activates nothing new passes even when the account is already over its limit.
    Raising rolls the whole transaction back, so a refused operation changes nothing.
    """
    after = activated_count(session)
    if after <= limit or after <= before:
        return
    audiences = "audience" if limit == 1 else "audiences"
    if after == before + 1:
        raise CreditLimitReached(
            f"{refused}: the account's limit of {limit} activated {audiences} is reached "
            f"({before} activated); deactivate an audience or raise the limit"
        )
    raise CreditLimitReached(
        f"{refused}: it would bring the activated audiences to {after}, over the account's limit of "
        f"{limit} activated {audiences} ({before} activated, {max(0, limit - before)} available); "
        "deactivate audiences or raise the limit"
    )
