"""Clear client errors: the field at fault, never a traceback."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sql
from starlette.exceptions import HTTPException

from broker.errors import IntakeRejected, clean_message
from broker.logging import describe_error
from broker.model.validation import field_name
from broker.operations import metrics

log = structlog.get_logger("casebridge.api")

#: Seconds a client is asked to wait when the store cannot be reached.
RETRY_AFTER_OUTAGE = "5"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        caller = getattr(request.state, "caller", None)
        metrics.EVENTS_REFUSED.labels(getattr(caller, "system", "unknown"), "invalid_envelope").inc()
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
        log_unavailable(request.url.path, exc)
        status, content, headers = unavailable_content()
        return JSONResponse(status_code=status, headers={name.decode(): value.decode() for name, value in headers},
                            content=content)

    for error_class in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, unavailable)

    @app.exception_handler(IntakeRejected)
    async def rejected(_request: Request, exc: IntakeRejected) -> JSONResponse:
        status, content = rejected_content(exc)
        return JSONResponse(status_code=status, content=content)


#: The store's errors that mean it cannot be reached (answered 503, to be tried again), not that a request is wrong.
UNAVAILABLE_ERRORS = (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError, sql.TimeoutError)


def log_unavailable(path: str, exc: Exception) -> None:
    log.error("api.database_unavailable", path=path, error=describe_error(exc))


def unavailable_content() -> tuple[int, dict[str, str], list[tuple[bytes, bytes]]]:
    """The answer to a request the store could not take: status, body and headers."""
    return 503, {"error": "unavailable", "message": "the store cannot be reached; try again shortly"}, [
        (b"retry-after", RETRY_AFTER_OUTAGE.encode())]


def rejected_content(exc: IntakeRejected) -> tuple[int, dict[str, object]]:
    """The answer to an event intake refused: status and body, the field at fault named."""
    kind = {404: "not_found", 409: "conflict"}.get(exc.status_code, "validation_failed")
    return exc.status_code, {
        "error": kind, "message": f"{exc.field}: {exc.message}",
        "errors": [{"field": exc.field, "message": exc.message}],
    }
