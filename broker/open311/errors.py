"""Open311's error answers: ``<errors><error><code/><description/></error></errors>`` (JSON: a list of
``{code, description}``), each description naming the parameter at fault.

The HTTP status is the spec's: 404 for a resource that does not exist (a service, a request, a jurisdiction, a
format), 403 for a missing or unknown ``api_key``, 400 for anything else. The code in the body may be more specific
than the status, as the spec allows: a body over the size limit is 400 with code 413, a key over its rate 400 with
code 429 (and ``Retry-After``).
"""

from __future__ import annotations

from broker.open311.wire import JSON, MEDIA_TYPES, XML, render


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
