"""Engines, sessions and schema migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from broker.store.json_codec import dumps_text, read_json_fast

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (as most tools write them) and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_postgres(session: Session) -> bool:
    """Whether ``session`` works on PostgreSQL (else SQLite): where the two take different statements."""
    return session.get_bind().dialect.name == "postgresql"


def create_store_engine(url: str) -> Engine:
    """An engine whose errors never carry statement parameters: those hold case payloads (personal data), and a
    database error's text ends up in log lines."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True,
                               json_serializer=dumps_text)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20, hide_parameters=True, json_serializer=dumps_text)
    event.listen(engine, "connect", read_json_fast)
    event.listen(engine, "connect", _note_returned)
    event.listen(engine, "checkin", _note_returned)
    event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    return engine


#: A pooled connection is pinged before use when it has lain idle this long. SQLAlchemy's ``pool_pre_ping`` pings
#: on every checkout: a round trip, and about a twentieth of an intake transaction's CPU, to learn what a
#: connection returned milliseconds ago already showed. One idle through a database restart is still caught here;
#: one broken while in use fails its statement either way (and SQLAlchemy then renews the whole pool).
PING_AFTER_IDLE_SECONDS = 1.0


def _note_returned(_dbapi_connection: Any, record: Any) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dialect: Any, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's documented pessimistic check, for idle connections only: DisconnectionError makes the pool
    throw the connection away and try a fresh one."""
    if time.monotonic() - record.info.get("returned_at", float("-inf")) < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as exc:
        raise sql.DisconnectionError(f"a pooled connection no longer answers: {type(exc).__name__}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock up front: two writers that both start by reading would otherwise deadlock
    # with SQLITE_BUSY on upgrade instead of waiting for each other.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database schema up to the newest migration."""
    command.upgrade(alembic_config(url), "head")


def schema_is_current(engine: Engine) -> bool:
    """True if the database is at the newest migration."""
    heads = set(ScriptDirectory.from_config(alembic_config(str(engine.url))).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads


class Store:
    """The database handle the rest of the broker shares: an engine and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = create_store_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any exception."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def single_read(self) -> Iterator[Connection]:
        """A connection for one read statement, outside any transaction: on PostgreSQL, without the BEGIN and
        ROLLBACK round trips a session sends around it (a worker reads every window's deliveries this way)."""
        with self.engine.connect() as connection:
            if self.is_postgres:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def migrate(self) -> None:
        upgrade(self.url)

    def dispose(self) -> None:
        self.engine.dispose()


def is_database_outage(error: BaseException) -> bool:
    """The store could not be reached or answered as if going away (connections terminated, pool exhausted, a
    locked SQLite file): nothing about the request is wrong, and the same request may succeed shortly."""
    return isinstance(error, sql.OperationalError | sql.InterfaceError | sql.DisconnectionError | sql.TimeoutError) \
        or (isinstance(error, sql.DBAPIError) and error.connection_invalidated)


def is_store_unreachable(error: Exception) -> bool:
    """The database could not be reached: a consumer holds the message and tries again, it is not the message's
    fault (narrower than :func:`is_database_outage`: a connection lost or refused, or SQLite's file locked)."""
    return isinstance(error, sql.OperationalError | sql.InterfaceError) and (
        error.connection_invalidated or isinstance(error, sql.InterfaceError) or "connect" in str(error).lower()
        or "database is locked" in str(error)
    )
