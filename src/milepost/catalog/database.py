"""Opening the catalog database: the engine, SQLite connection settings, and migrations to head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from milepost.errors import InvalidRequest

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# An arbitrary constant: the advisory lock that serialises concurrent migrations on PostgreSQL.
_MIGRATION_LOCK_ID = 0x6D696C65


def open_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL catalog URL, with foreign keys and WAL on SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {}
        if parsed.database in (None, "", ":memory:"):
            # Every connection to an in-memory database is a new, empty database: share one.
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise InvalidRequest(
        f"unsupported catalog database {backend!r}: use a sqlite:///PATH or postgresql+psycopg://… URL"
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def migration_config() -> Config:
    """An Alembic config pointing at the packaged migrations; no alembic.ini is read."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration in one transaction; a no-op on an up-to-date catalog."""
    config = migration_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
