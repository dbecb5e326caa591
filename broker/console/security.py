"""Who is asking, and may they: the session cookie, roles, CSRF tokens and the console's security headers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Response, status
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from broker.intake import Intake
from broker.schedules import Schedule
from broker.store.database import Store

from .accounts import SESSION_HOURS, Officer, officer_for

SESSION_COOKIE = "casebridge_console"
SIGN_IN_COOKIE = "casebridge_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

#: Pages load only their own styles and scripts: an injected script tag could not run even if it got through.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleContext:
    store: Store
    intake: Intake
    exchange: str
    targets: list[str]
    schedules: list[Schedule]
    #: None: secure cookies whenever the console is reached over https (directly or through a proxy that says so).
    secure_cookies: bool | None = None
    wake_relay: Any = None
    runner: Any = field(default=None)


class SignInNeeded(Exception):
    """A page was asked for without a session: send the browser to the sign-in page."""


def current_officer(context: ConsoleContext, request: Request) -> Officer | None:
    return officer_for(context.store, request.cookies.get(SESSION_COOKIE))


def page_officer(context: ConsoleContext, request: Request) -> Officer:
    officer = current_officer(context, request)
    if officer is None:
        raise SignInNeeded()
    return officer


def api_officer(context: ConsoleContext, request: Request) -> Officer:
    officer = current_officer(context, request)
    if officer is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail={"error": "unauthorized", "message": "sign in to the console first"})
    return officer


def check_role(officer: Officer, role: str) -> None:
    if not officer.can(role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail={
            "error": "forbidden", "message": f"this needs the {role} role; {officer.name} is a {officer.role}"})


def check_csrf(officer: Officer, sent: str | None) -> None:
    if not sent or not secrets.compare_digest(sent, officer.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail={
            "error": "csrf", "message": "the form's security token is missing or out of date; reload the page"})


def is_secure(context: ConsoleContext, request: Request) -> bool:
    if context.secure_cookies is not None:
        return context.secure_cookies
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"


def set_session_cookie(context: ConsoleContext, request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, path="/", httponly=True,
                        samesite="strict", secure=is_secure(context, request))


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


class ConsoleHeaders(BaseHTTPMiddleware):
    """Security headers on the console's pages (the API docs at /docs load their own scripts and keep theirs)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(("/console", "/v1/console")):
            for name, value in CONSOLE_HEADERS.items():
                response.headers.setdefault(name, value)
        return response
