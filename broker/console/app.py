"""Mounts the console on the broker's FastAPI app: pages, static files, JSON API and the bulk-replay runner."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .admin_web import admin_router
from .api import console_api
from .replay_jobs import ReplayRunner
from .security import CSRF_FIELD, ConsoleContext, ConsoleHeaders, SignInNeeded, current_officer
from .web import console_router, templates

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI, context: ConsoleContext, *,
                    stop: threading.Event | None = None) -> ReplayRunner | None:
    """Add the console to ``app``; with ``stop``, also start the thread that runs bulk replays."""
    app.add_middleware(ConsoleHeaders)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(console_router(context))
    app.include_router(admin_router(context))
    app.include_router(console_api(context))

    @app.exception_handler(SignInNeeded)
    def to_sign_in(_request: Request, _exc: SignInNeeded) -> Response:
        return RedirectResponse("/console/sign-in", status_code=303)

    as_json = app.exception_handlers.get(HTTPException)

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> Response:
        """Console pages answer errors with a page in words; everything else keeps the JSON answer."""
        path = request.url.path
        if not path.startswith("/console") or path.startswith("/console/static") or as_json is None:
            if as_json is None:
                raise exc
            answer = as_json(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        message = exc.detail.get("message") if isinstance(exc.detail, dict) else str(exc.detail)
        officer = current_officer(context, request)
        return templates.TemplateResponse(request, "error.html", {
            "officer": officer, "csrf_field": CSRF_FIELD, "status": exc.status_code, "message": message,
        }, status_code=exc.status_code, headers=exc.headers)

    if stop is not None:
        context.runner = ReplayRunner(context.store, context.intake, stop=stop,
                                      after_batch=context.wake_relay)
        context.runner.start()
    runner: ReplayRunner | None = context.runner
    return runner
