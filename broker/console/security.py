"""Who is asking, and may they: the session cookie, roles, CSRF tokens and the console's security headers."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import HTTPException, Path, Request, Response, status
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.intake.transaction import Intake
from broker.scheduling.schedules import Schedule
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


#: The largest row id the console takes (beyond it the store's integers end, and a look-up would fail).
MAX_ID = 2**53
#: A failed message's or a replay's id in a path: a 422 for one no row can have, never a 500.
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Flashes:
    """What the next page a session shows says about the action just done ("delivery to highways queued again").

    Kept on the server by the session's key, handed out once and forgotten, never carried in a URL: a link cannot
    make the console say anything. In this process's memory: behind several API processes, a redirect served by
    another one shows no banner (and never a false one).
    """

    def __init__(self, *, max_sessions: int = 10_000, keep_seconds: float = 600.0) -> None:
        self.max_sessions = max_sessions
        self.keep_seconds = keep_seconds
        self._messages: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request: Request, message: str) -> None:
        key = _session_key(request)
        if key is None:
            return
        with self._lock:
            self._messages.pop(key, None)
            self._messages[key] = (message[:2000], time.monotonic())
            while len(self._messages) > self.max_sessions:
                self._messages.popitem(last=False)

    def take(self, request: Request) -> str | None:
        key = _session_key(request)
        if key is None:
            return None
        with self._lock:
            found = self._messages.pop(key, None)
        if found is None or time.monotonic() - found[1] > self.keep_seconds:
            return None
        return found[0]


def _session_key(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    return hashlib.sha256(token.encode()).hexdigest() if token else None


@dataclass
class ConsoleContext:
    store: Store
    intake: Intake
    targets: list[str]
    schedules: list[Schedule]
    #: None: secure cookies whenever the console is reached over https (directly or through a proxy that says so).
    secure_cookies: bool | None = None
    wake_relay: Any = None
    runner: Any = field(default=None)
    flashes: Flashes = field(default_factory=Flashes)
    #: Refused sign-ins from one address in the window before that address must wait (accounts never lock).
    sign_in_failures: int = 10
    sign_in_window_seconds: float = 900.0
    #: The store's size not to exceed (the dashboard warns from 80% of it).
    store_size_limit_bytes: int | None = None

    def sign_in(self, name: str, password: str, request: Request) -> str:
        """``accounts.sign_in`` from the request's address, with this console's limits."""
        from .accounts import sign_in

        address = request.client.host if request.client else "unknown"
        return sign_in(self.store, name, password, address, max_failures=self.sign_in_failures,
                       window=timedelta(seconds=self.sign_in_window_seconds))


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


class ConsoleHeaders:
    """Security headers on the console's pages (the API docs at /docs load their own scripts and keep theirs).

    Plain ASGI rather than ``BaseHTTPMiddleware``, which runs every request, the API's too, in a task group of
    its own: other paths go straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/console", "/v1/console")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in CONSOLE_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
