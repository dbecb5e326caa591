"""Statements for a whole window of rows at once: array-bound inserts, updates and lookups on PostgreSQL,
executemany and ``IN`` lists elsewhere.

A window of a few hundred events writes a thousand or more rows (events, cases, audit steps, deliveries, outbox
messages). As ``INSERT`` statements with a placeholder per value, those rows are built into SQL text row by row
on the client, and parsed and planned on the server. Sent as one binary array per column and unnested by the
server, a window costs one round trip and one statement whose text (and plan) is the same for every window; the
rows land in the session's transaction like any other statement's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    any_,
    bindparam,
    insert,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from broker.store.database import is_postgres
from broker.store.json_codec import dumps_text
from broker.store.tables import Base, table


def insert_rows(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys, column names) into ``model``'s table.

    On PostgreSQL one ``INSERT ... SELECT FROM unnest(...)``, each column's values travelling as one binary array:
    one round trip and one statement text whatever the number of rows. (COPY, which streams rows as well, takes
    three round trips, and its statement was composed anew each time: for the one or two events of a quiet
    moment's transaction that cost more than the rows.)
    """
    if not rows:
        return
    if not is_postgres(session):
        session.execute(insert(table(model)), list(rows))
        return
    name, columns = table(model).name, tuple(rows[0])
    _execute_with_arrays(session, "INSERT", name, _insert_statement(name, columns), rows)


def _execute_with_arrays(session: Session, what: str, table_name: str,
                         statement: tuple[sql.Composed, tuple[str, ...], list[bool]],
                         rows: Sequence[dict[str, Any]]) -> None:
    """Run an array-bound ``statement`` (its query, the columns its arrays carry and which are JSON) with one
    binary array per column of ``rows``; the query's text is composed once."""
    query, names, is_json = statement
    key = (what, table_name, *names)
    # Binary parameters: a text array would be escaped element by element in Python, JSON quotes and all.
    values = [
        [dumps_text(row[name]) if json and row[name] is not None else row[name] for row in rows]
        for name, json in zip(names, is_json, strict=True)
    ]
    with _driver(session, what) as driver, driver.cursor() as cursor:
        text_of = _composed_texts.get(key)
        if text_of is None:  # composed with the connection (psycopg would compose it again on every execution)
            text_of = _composed_texts[key] = query.as_bytes(driver)
        cursor.execute(text_of, values)


_composed_texts: dict[tuple[str, ...], bytes] = {}


def _unnested_arrays(target: Any, names: Sequence[str]) -> sql.Composed:
    """``%b::type[], ...``: one binary array parameter per column, typed as the column is."""
    return sql.SQL(", ").join(sql.SQL("%b::{}[]").format(sql.SQL(_array_type(target.c[name].type)))
                              for name in names)


@functools.cache
def _insert_statement(table_name: str,
                      columns: tuple[str, ...]) -> tuple[sql.Composed, tuple[str, ...], list[bool]]:
    """The statement inserting ``columns`` of a table from one array per column, and which columns are JSON."""
    target = Base.metadata.tables[table_name]
    is_json = [isinstance(target.c[name].type, JSON) for name in columns]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    arrays = _unnested_arrays(target, columns)
    selected = sql.SQL(", ").join(
        sql.SQL("v.{}::jsonb" if json else "v.{}").format(sql.Identifier(name))
        for name, json in zip(columns, is_json, strict=True)
    )
    query = sql.SQL("INSERT INTO {table} ({names}) SELECT {selected} FROM unnest({arrays}) AS v({names})").format(
        table=sql.Identifier(table_name), names=names, selected=selected, arrays=arrays)
    return query, columns, is_json


@contextmanager
def _driver(session: Session, what: str) -> Iterator[psycopg.Connection[Any]]:
    """The session's psycopg connection, for what SQLAlchemy cannot express (COPY, array-bound statements).

    Errors come out as SQLAlchemy's, as they would from ``session.execute``: an integrity error as
    ``IntegrityError`` (callers retry a concurrent insert on it), a lost connection as an ``OperationalError``
    with the connection invalidated (consumers hold their messages through a database outage on it).
    """
    connection = session.connection()
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    try:
        yield driver
    except psycopg.Error as exc:
        lost = driver.closed or driver.broken
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(what, None, exc, psycopg.Error, connection_invalidated=lost) from exc


@contextmanager
def pipelined(session: Session) -> Iterator[None]:
    """Statements run through the driver inside this block are sent without waiting for each other's results
    (psycopg's pipeline mode, on PostgreSQL): a transaction's writes cost one round trip, not one each, plus one
    wherever a result is read. An error in any of them is raised at the latest as the block ends."""
    if not is_postgres(session):
        yield
        return
    with _driver(session, "WRITE") as driver, driver.pipeline():
        yield


def insert_rows_with_ids(session: Session, model: type[Base], rows: Sequence[dict[str, Any]],
                         ids: Sequence[int] | None = None) -> list[int]:
    """Insert ``rows`` into a table with a serial ``id``; return the new ids in the order of ``rows``.

    ``ids``, taken beforehand with :func:`reserve_ids`, saves the round trip that takes them here.
    """
    if not rows:
        return []
    if ids is None:
        reserved = reserve_ids(session, [(model, len(rows))])
        if reserved is None:  # not PostgreSQL: the ids come back from the insert itself
            target = table(model)
            statement = insert(target).returning(target.c.id, sort_by_parameter_order=True)
            return [int(value) for value in session.scalars(statement, list(rows)).all()]
        ids = reserved[0]
    insert_rows(session, model, [{"id": new_id, **row} for new_id, row in zip(ids, rows, strict=True)])
    return list(ids)


def reserve_ids(session: Session, wanted: Sequence[tuple[type[Base], int]]) -> list[list[int]] | None:
    """On PostgreSQL, ``count`` new ids from each table's sequence, in ascending order, all in one round trip;
    None elsewhere (SQLite hands ids out only as rows are inserted)."""
    if not is_postgres(session):
        return None
    named = [(table(model).name, count) for model, count in wanted]
    asked = [(name, count) for name, count in named if count]
    taken: dict[str, list[int]] = {name: [] for name, _ in asked}
    if asked:
        with _driver(session, "SELECT") as driver, driver.cursor() as cursor:
            cursor.execute(_next_ids_statement(len(asked)),
                           [value for name, count in asked for value in (name, name, count)])
            for name, value in cursor.fetchall():
                taken[name].append(int(value))
    return [sorted(taken[name]) if count else [] for name, count in named]


@functools.cache
def _next_ids_statement(tables: int) -> bytes:
    # Each table's name is bound twice: once to label its ids, once to find its sequence.
    one = b"SELECT %s::text, nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"
    return b" UNION ALL ".join([one] * tables)


def update_rows(session: Session, model: type[Base], rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """Set each row's values (dicts with the same keys, ``key`` among them) on the row with that ``key``.

    On PostgreSQL one ``UPDATE ... FROM unnest(...)`` whose text is the same whatever the number of rows, the
    values travelling as one array per column; elsewhere an executemany.
    """
    if not rows:
        return
    target = table(model)
    columns = [name for name in rows[0] if name != key]
    if not is_postgres(session):
        statement = update(target).where(target.c[key] == bindparam("_key")).values(
            {name: bindparam(f"_{name}") for name in columns})
        session.connection().execute(statement, [
            {"_key": row[key], **{f"_{name}": row[name] for name in columns}} for row in rows
        ])
        return
    names = (key, *columns)
    _execute_with_arrays(session, "UPDATE", target.name, _update_statement(target.name, names), rows)


@functools.cache
def _update_statement(table_name: str,
                      names: tuple[str, ...]) -> tuple[sql.Composed, tuple[str, ...], list[bool]]:
    """The statement setting ``names[1:]`` on the rows whose ``names[0]`` is given, from one array per column."""
    target = Base.metadata.tables[table_name]
    key = names[0]
    is_json = [isinstance(target.c[name].type, JSON) for name in names]
    sets = sql.SQL(", ").join(
        sql.SQL("{} = v.{}::jsonb" if json else "{} = v.{}").format(sql.Identifier(name), sql.Identifier(name))
        for name, json in zip(names[1:], is_json[1:], strict=True)
    )
    query = sql.SQL("UPDATE {table} SET {sets} FROM unnest({arrays}) AS v({names}) WHERE {table}.{key} = v.{key}")
    return query.format(table=sql.Identifier(table_name), sets=sets, arrays=_unnested_arrays(target, names),
                        names=sql.SQL(", ").join(map(sql.Identifier, names)), key=sql.Identifier(key)), names, is_json


def _array_type(column_type: Any) -> str:
    """The PostgreSQL element type an array of this column's values is sent as (JSON goes as text)."""
    if isinstance(column_type, JSON):
        return "text"
    if isinstance(column_type, DateTime) or isinstance(getattr(column_type, "impl", None), DateTime):
        return "timestamptz"
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, Integer):
        return "bigint"
    if isinstance(column_type, Float):
        return "float8"
    if isinstance(column_type, LargeBinary):
        return "bytea"
    return "text"


def in_list(column: Any, name: str, *, postgres: bool) -> ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: ``= ANY(array)`` on PostgreSQL, an expanding ``IN``
    elsewhere. For statements built once and run many times with their values as parameters, which spares
    building the statement and its cache key anew at every execution (as :func:`any_of` does)."""
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def any_of(session: Session, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``, one parameter however many values.

    With one placeholder per value, a window of a different size is a statement with different text, which the
    driver converts to PostgreSQL's form anew each time; at import sizes that conversion cost a quarter of the job.
    """
    wanted = list(values)
    if not is_postgres(session):
        return column.in_(wanted)  # type: ignore[no-any-return]
    return column == any_(bindparam(None, wanted, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
