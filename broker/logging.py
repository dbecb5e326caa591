"""structlog configured once: one JSON line per message step, correlation ids bound, personal data redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import pydantic_core
import structlog

#: Keys whose values are personal data or free text; they never reach a log line.
REDACTED_KEYS = frozenset({
    "name", "email", "phone", "address", "description", "text", "note", "reporter", "person",
    "representative", "on_behalf_of", "body", "payload", "case", "snapshot", "reason_text",
})


def redact_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def render_json(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    """The event as one line of JSON.

    Written by pydantic-core's encoder, which takes about a third of the ``json`` module's time: workers write a
    line for every step of every message. A value it has no rule for is written as its ``str()``; what it cannot
    write at all (bytes that are not UTF-8, say) falls back to the ``json`` module.
    """
    try:
        return pydantic_core.to_json(event_dict, serialize_unknown=True).decode()
    except ValueError:  # pydantic-core's serialisation error is one
        return json.dumps(event_dict, default=repr, skipkeys=True)


def configure_logging(level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal_data,
            structlog.processors.format_exc_info,
            render_json,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


def describe_error(exc: BaseException) -> str:
    """An exception as one log-safe line: its type and the first line of its message.

    Database errors continue on later lines with the server's DETAIL (PostgreSQL quotes the offending row's
    values there) and the statement; neither belongs in a log line, which must carry no personal data.
    """
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
