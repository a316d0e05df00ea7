"""Alembic environment for the catalog, run programmatically by `milepost.catalog.database`.

It takes the open connection from `config.attributes["connection"]` (or builds an engine from the
`sqlalchemy.url` option) and never touches logging configuration.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from milepost.catalog.tables import Base


def run_on(connection: Connection) -> None:
    """Run the pending migrations on one connection, in its transaction."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # Batch mode lets later migrations ALTER tables on SQLite by copying them.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as own:
            run_on(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the catalog migrations run online only, against an open database")
run_online()
