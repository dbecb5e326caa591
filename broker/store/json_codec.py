"""JSON for the store's columns, written and read by pydantic-core rather than the ``json`` module.

Every event, case snapshot, audit detail and outbox message is written as JSON on the hot path, and exports and
intake read them back by the thousand; pydantic-core writes the same documents about four times as fast, and
reads them a fifth faster. What it cannot encode (a string holding a lone surrogate,
which only a ``json.loads`` upstream lets through) goes to the ``json`` module, so nothing that was stored before
fails now.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads
from pydantic_core import PydanticSerializationError, from_json, to_json


def dumps_text(value: Any) -> str:
    """``value`` as compact JSON text (what SQLAlchemy's JSON type binds, and COPY sends)."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value)


def read_json_fast(connection: psycopg.Connection[Any], _record: object = None) -> None:
    """Have this PostgreSQL connection decode ``json`` and ``jsonb`` values with pydantic-core."""
    set_json_loads(from_json, connection)
