"""Mounts the console on the broker's FastAPI app: pages, static files, JSON API and the bulk-replay runner."""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from .api import console_api
from .replay_jobs import ReplayRunner
from .security import ConsoleContext, ConsoleHeaders, SignInNeeded
from .web import console_router

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI, context: ConsoleContext, *, stop: threading.Event | None = None) -> None:
    """Add the console to ``app``; with ``stop``, also start the thread that runs bulk replays."""
    app.add_middleware(ConsoleHeaders)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(console_router(context))
    app.include_router(console_api(context))

    @app.exception_handler(SignInNeeded)
    def to_sign_in(_request: Request, _exc: SignInNeeded) -> Response:
        return RedirectResponse("/console/sign-in", status_code=303)

    if stop is not None:
        context.runner = ReplayRunner(context.store, context.intake, context.exchange, stop=stop,
                                      after_batch=context.wake_relay)
        context.runner.start()
