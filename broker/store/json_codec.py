"""JSON for the store's columns, written by pydantic-core's serialiser rather than the ``json`` module.

Every event, case snapshot, audit detail and outbox message is written as JSON on the hot path; pydantic-core
writes the same documents about four times as fast. What it cannot encode (a string holding a lone surrogate,
which only a ``json.loads`` upstream lets through) goes to the ``json`` module, so nothing that was stored before
fails now.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_json


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    try:
        return to_json(value)
    except PydanticSerializationError:
        return json.dumps(value).encode()


def dumps_text(value: Any) -> str:
    """``value`` as compact JSON text (what SQLAlchemy's JSON type binds)."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value)
