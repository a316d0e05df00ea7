"""Opening a catalog: migrations, connection settings, reopening, and leaving logging alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from milepost.catalog import Catalog
from milepost.catalog.database import migration_config
from milepost.catalog.tables import Base
from milepost.clock import ManualClock
from milepost.errors import InvalidRequest


def test_migrations_reach_head_and_match_the_models(catalog: Catalog, catalog_url: str) -> None:
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    assert head == "0003"
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert context.get_current_revision() == head
            assert compare_metadata(context, Base.metadata) == []
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert {
        "workspaces",
        "inputs",
        "account_settings",
        "api_tokens",
        "journeys",
        "journey_inputs",
        "milestones",
        "audiences",
        "audience_references",
        "calculated_attributes",
        "outputs",
        "connections",
        "alembic_version",
    } <= tables


def test_reopening_keeps_data_and_reruns_no_migration(catalog_url: str, clock: ManualClock) -> None:
    with Catalog(catalog_url, clock=clock) as first:
        workspace = first.create_workspace("Main")
        created, secret = first.create_input("Main", "web", "web")
        first.update_settings(lookback_days=30)
        _, token = first.create_token("admin")
    with Catalog(catalog_url, clock=clock) as second:
        assert second.list_workspaces() == [workspace]
        assert second.get_input("web") == created
        assert second.check_input_secret(created, secret)
        assert second.get_settings().lookback_days == 30
        assert second.verify_token(token) is not None
    with Catalog(catalog_url, clock=clock) as third:
        assert [w.name for w in third.list_workspaces()] == ["Main"]


def test_sqlite_enables_foreign_keys_and_wal(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with catalog._engine.connect() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        catalog.close()


def test_in_memory_sqlite_works(clock: ManualClock) -> None:
    with Catalog("sqlite://", clock=clock) as catalog:
        catalog.create_workspace("Main")
        assert [w.name for w in catalog.list_workspaces()] == ["Main"]


def test_opening_leaves_logging_configuration_alone(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    watched = logging.getLogger("milepost.test.catalog")
    with Catalog(f"sqlite:///{tmp_path / 'c.db'}"):
        pass
    assert root.handlers == handlers
    assert root.level == level
    assert not watched.disabled


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="sqlite"):
        Catalog("mysql://localhost/milepost")
