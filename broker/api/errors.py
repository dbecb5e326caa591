"""Clear client errors: the field at fault, never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import exc as sql
from starlette.exceptions import HTTPException

from broker.errors import IntakeRejected, clean_message
from broker.logging import describe_error
from broker.model.events import EventType

log = structlog.get_logger("casebridge.api")

_EVENT_TAGS = {event_type.value for event_type in EventType}
#: Seconds a client is asked to wait when the store cannot be reached.
RETRY_AFTER_OUTAGE = "5"


def is_database_outage(error: BaseException) -> bool:
    """The store could not be reached or answered as if going away (connections terminated, pool exhausted, a
    locked SQLite file): nothing about the request is wrong, and the same request may succeed shortly."""
    return isinstance(error, sql.OperationalError | sql.InterfaceError | sql.DisconnectionError | sql.TimeoutError) \
        or (isinstance(error, sql.DBAPIError) and error.connection_invalidated)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            first = next(error for error in errors if error.get("type") == "json_invalid")
            position = first.get("ctx", {}).get("error", "malformed JSON")
            return JSONResponse(status_code=400, content={
                "error": "malformed_json", "message": f"the request body is not valid JSON: {position}",
            })
        fields = [
            {"field": field_name(error["loc"]), "message": clean_message(error["msg"]), "type": error["type"]}
            for error in errors
        ]
        return JSONResponse(status_code=422, content={
            "error": "validation_failed",
            "message": "; ".join(f"{item['field']}: {item['message']}" for item in fields),
            "errors": fields,
        })

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        content = exc.detail if isinstance(exc.detail, dict) else {"error": "http_error", "message": str(exc.detail)}
        return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.database_unavailable", path=request.url.path, error=describe_error(exc))
        return JSONResponse(status_code=503, headers={"Retry-After": RETRY_AFTER_OUTAGE}, content={
            "error": "unavailable", "message": "the store cannot be reached; try again shortly"})

    for error_class in (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError, sql.TimeoutError):
        app.add_exception_handler(error_class, unavailable)

    @app.exception_handler(IntakeRejected)
    async def rejected(_request: Request, exc: IntakeRejected) -> JSONResponse:
        kind = {404: "not_found", 409: "conflict"}.get(exc.status_code, "validation_failed")
        return JSONResponse(status_code=exc.status_code, content={
            "error": kind, "message": f"{exc.field}: {exc.message}",
            "errors": [{"field": exc.field, "message": exc.message}],
        })
