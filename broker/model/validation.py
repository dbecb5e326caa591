"""Validation errors as every channel reports them: the field at fault (dotted), the sentence, never the value.

HTTP answers them in a 422, AMQP and batch imports record them with the failed message; the same names either way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from broker.errors import clean_message
from broker.model.events import EventType

_EVENT_TAGS = {event_type.value for event_type in EventType}


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "case.created", "case", "location")`` -> ``"case.location"``."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "header", "path", "query"):
        parts = parts[1:]
    if parts and parts[0] in _EVENT_TAGS:
        parts = parts[1:]
    return ".".join(parts).replace("\x00", "\\x00") or "(body)"


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "case.location", "message": ..., "type": ...}`` with dotted field names.

    Only the field, pydantic's sentence and the error type: never the value that was refused, which may be
    personal data (pydantic's own text quotes it as ``input_value=...``).
    """
    return [
        {"field": field_name(item["loc"]), "message": clean_message(item["msg"]), "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False)
    ]


def validation_summary(error: ValidationError) -> str:
    """One line naming each field at fault and why, without the values refused."""
    return "; ".join(f"{item['field']}: {item['message']}" for item in field_errors(error))
