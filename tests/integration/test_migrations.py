"""The migrations build exactly the tables the code declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from broker.logging import describe_error
from broker.store.database import Store, create_store_engine, schema_is_current, upgrade
from broker.store.tables import Base


def test_migrated_schema_matches_the_declared_tables(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_store_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], f"tables and migrations disagree; add a migration: {differences}"
        assert schema_is_current(engine)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_is_repeatable_and_a_fresh_store_is_not_current(empty_database_url: str) -> None:
    engine = create_store_engine(empty_database_url)
    try:
        assert not schema_is_current(engine)
        store = Store(empty_database_url)
        store.migrate()
        store.migrate()
        store.dispose()
        assert schema_is_current(engine)
    finally:
        engine.dispose()


def test_database_errors_never_carry_the_statement_parameters(empty_database_url: str) -> None:
    """A database error is logged as one line; the values it would quote are case payloads full of personal data."""
    engine = create_store_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE privacy_probe (email VARCHAR(20) UNIQUE)")
        with pytest.raises(DBAPIError) as raised, engine.begin() as connection:
            for _ in range(2):
                connection.execute(text("INSERT INTO privacy_probe (email) VALUES (:email)"),
                                   {"email": "jane@example.org"})
        logged = describe_error(raised.value)
        assert "privacy_probe" in logged
        assert "jane@example.org" not in logged
    finally:
        engine.dispose()
