"""Open311's error answers: ``<errors><error><code/><description/></error></errors>`` (JSON: a list of
``{code, description}``), each description naming the parameter at fault.

The HTTP status is the spec's: 404 for a resource that does not exist (a service, a request, a jurisdiction, a
format), 403 for a missing or unknown ``api_key``, 400 for anything else. The code in the body may be more specific
than the status, as the spec allows: a body over the size limit is 400 with code 413, a key over its rate 400 with
code 429 (and ``Retry-After``).
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.api.errors import RETRY_AFTER_OUTAGE
from broker.logging import describe_error
from broker.open311.wire import JSON, MEDIA_TYPES, XML, render
from broker.store.database import is_database_outage

log = structlog.get_logger("casebridge.open311")


class Open311Error(Exception):
    """An answer in the spec's error format: the HTTP status, and (code, description) for each thing wrong."""

    def __init__(self, status: int, errors: list[tuple[int, str]], headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.errors = errors
        self.headers = headers or {}
        super().__init__("; ".join(description for _code, description in errors))


def bad(problems: list[tuple[str, str]]) -> Open311Error:
    """400, one error per (parameter, what is wrong with it)."""
    return Open311Error(400, [(400, f"{parameter}: {message}") for parameter, message in problems])


def not_found(parameter: str, message: str) -> Open311Error:
    return Open311Error(404, [(404, f"{parameter}: {message}")])


def forbidden(message: str) -> Open311Error:
    return Open311Error(403, [(403, f"api_key: {message}")])


def format_of_path(path: str) -> str:
    """The format a path asks for, to answer in it even when the path itself is wrong."""
    return JSON if path.rstrip("/").endswith(".json") else XML


def error_document(fmt: str, errors: list[tuple[int, str]]) -> tuple[bytes, str]:
    """The body and its content type."""
    return render(fmt, "errors", [{"code": code, "description": text} for code, text in errors]), MEDIA_TYPES[fmt]


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answered in the spec's format: a refusal as raised, FastAPI's own (an unreadable body, a path
    that is no resource, a method not offered), the store out of reach (503), anything else (500, its cause logged,
    never shown)."""

    def errors(request: Request, status: int, found: list[tuple[int, str]],
               headers: dict[str, str] | None = None) -> Response:
        body, media_type = error_document(format_of_path(request.url.path), found)
        return Response(body, status_code=status, media_type=media_type, headers=headers)

    @app.exception_handler(Open311Error)
    async def open311_error(request: Request, exc: Open311Error) -> Response:
        return errors(request, exc.status, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        found = [(400, f"{'.'.join(str(part) for part in error['loc'][1:]) or '(form)'}: "
                       f"{error['msg'].removeprefix('Value error, ')}") for error in exc.errors()]
        return errors(request, 400, found or [(400, "(form): could not be read")])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return errors(request, 404, [(404, "no such resource here: the endpoint offers discovery, services, "
                                               "requests, tokens and servicerequestupdates, each as .xml or .json")])
        if exc.status_code == 405:
            return errors(request, 400, [(405, f"{request.method} is not offered on this resource")])
        return errors(request, 400, [(exc.status_code, f"(form): {exc.detail}")])

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.error("open311.database_unavailable", path=request.url.path, error=describe_error(exc))
        return errors(request, 503, [(503, "the store cannot be reached; try again shortly")],
                      {"Retry-After": RETRY_AFTER_OUTAGE})

    async def failed(request: Request, exc: Exception) -> Response:
        if is_database_outage(exc):
            return await unavailable(request, exc)
        log.error("open311.failed", path=request.url.path, error=describe_error(exc))
        return errors(request, 500, [(500, "the endpoint failed; the council's integration team can see why")])

    app.add_exception_handler(Exception, failed)
    from sqlalchemy import exc as sql

    for error_class in (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError, sql.TimeoutError):
        app.add_exception_handler(error_class, unavailable)
