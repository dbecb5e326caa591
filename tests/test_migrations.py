"""The migrations build exactly the tables the code declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from broker.store.database import Store, create_store_engine, schema_is_current, upgrade
from broker.store.tables import Base


def test_migrated_schema_matches_the_declared_tables(database_url: str) -> None:
    upgrade(database_url)
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], f"tables and migrations disagree; add a migration: {differences}"
        assert schema_is_current(engine)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_is_repeatable_and_a_fresh_store_is_not_current(database_url: str) -> None:
    engine = create_store_engine(database_url)
    try:
        assert not schema_is_current(engine)
        store = Store(database_url)
        store.migrate()
        store.migrate()
        store.dispose()
        assert schema_is_current(engine)
    finally:
        engine.dispose()
