"""structlog configured once: one JSON line per message step, correlation ids bound, personal data redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pydantic_core
import structlog

#: Keys whose values are personal data or free text; they never reach a log line.
REDACTED_KEYS = frozenset({
    "name", "email", "phone", "address", "description", "text", "note", "reporter", "person",
    "representative", "on_behalf_of", "body", "payload", "case", "snapshot", "reason_text",
})


#: Query parameters whose values are secrets wherever they appear in a URL.
_SECRET_PARAMETER = re.compile(r"key|token|secret|pass|pwd|sig|auth|credential|session|code", re.IGNORECASE)
#: A URL in free text: a scheme, then anything up to a space, quote or bracket, less a closing punctuation mark.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]*[^\s'\"<>()\[\]{}.,;:!?]")
REDACTED = "[redacted]"


def redact_url(url: object) -> str:
    """A URL fit to record or show: no user-info (``user:password@``), and secret-looking query values masked.

    The one place URLs are made safe, used wherever one reaches a message, a log line, the store or a page.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
        netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(name, REDACTED if _SECRET_PARAMETER.search(name) else value) for name, value in pairs],
                              safe="[]")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and REDACTED))
    except ValueError:  # not a URL that can be taken apart: keep nothing of it that could be a secret
        return text.partition("://")[0] + "://" + REDACTED if "://" in text else REDACTED


def redact_urls(text: str) -> str:
    """Every URL in ``text`` made safe by :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group(0)), text) if "://" in text else text


def redact_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = REDACTED
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_urls(value)
    return event_dict


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
#: Quoted names kept in an error's text: snake_case or dotted identifiers (a constraint, table, column, queue or
#: service code), which are ours, never a resident's.
_IDENTIFIER = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)+|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")


def _unquoted(text: str) -> str:
    """``text`` with every quoted value that is not one of our identifiers replaced by '…'."""
    return _QUOTED.sub(lambda found: found.group(0) if _IDENTIFIER.fullmatch(found.group(0)[1:-1])
                       else f"{found.group(0)[0]}…{found.group(0)[0]}", text)


def safe_exception_text(exc: BaseException) -> str:
    """An exception for a traceback in a log line: its type and the first line of its message, with any quoted
    value and any URL's secrets taken out. Later lines (PostgreSQL's DETAIL and CONTEXT quote the row or the JSON
    document at fault, SQLAlchemy adds the statement) never appear."""
    lines = str(exc).strip().splitlines()
    first = _unquoted(redact_urls(lines[0]))[:300] if lines else ""
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def redacted_exception(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``exc_info`` as ``exception``: each exception of the chain (safe_exception_text) and the frames it passed
    through, as file, line and function only: no source text, no local variables, no message beyond the first line.
    """
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is None or exc_info is False:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    error = exc_info if isinstance(exc_info, BaseException) else exc_info[1] if isinstance(exc_info, tuple) else None
    if error is None:
        return event_dict
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(chain) < 10:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-20:]
        chain.append({"error": safe_exception_text(current),
                      "frames": [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames]})
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    event_dict["exception"] = chain
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
    """Our log lines, every library's (uvicorn's "Exception in ASGI application" included) and any uncaught
    exception of a thread or of the process: one JSON line each, through the same redaction."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal_data,
            redacted_exception,
            render_json,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_personal_data,
                    redacted_exception, render_json],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers would print plain text
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing (a test's capture, a redirected stream)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()
_uncaught = structlog.get_logger("casebridge.uncaught")


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    _uncaught.critical("process.uncaught_exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    _uncaught.error("thread.uncaught_exception", thread=args.thread.name if args.thread else None,
                    exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def describe_error(exc: BaseException) -> str:
    """An exception as one log-safe line: its type and the first line of its message, quoted values and URLs'
    secrets taken out (:func:`safe_exception_text`).

    Database errors continue on later lines with the server's DETAIL (PostgreSQL quotes the offending row's
    values there) and the statement; neither belongs in a log line, which must carry no personal data.
    """
    return safe_exception_text(exc)
