"""``broker api --workers N``: N API processes sharing one port, as uvicorn runs them, each with its own relay.

uvicorn's supervisor starts each process afresh and builds its app from :func:`app_for_process`, with the settings
the parent was given (the listen address travels in the environment). The relays need no coordination beyond the
store's: each takes outbox rows with ``FOR UPDATE SKIP LOCKED``, so a row is published by one of them. The
in-process transport and the SQLite store cannot be shared by processes, so both are refused here.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import typer

from broker.cli.common import build_broker, console, load_settings
from broker.settings import Settings

#: Where the API processes keep their metrics so that any of them can answer /metrics with the sum of all.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The supervisor's process id, for API processes to notice that it has gone (even before they were ready).
SUPERVISOR_VARIABLE = "CASEBRIDGE_API_SUPERVISOR_PID"


def refusal(settings: Settings) -> str | None:
    """Why these settings cannot run in several API processes, or None."""
    if not settings.uses_rabbitmq:
        return ("--workers needs RabbitMQ (CASEBRIDGE_AMQP_URL=amqp://...): with memory:// each process would have "
                "a transport of its own, which no worker reads")
    if not settings.database_url.startswith("postgresql"):
        return ("--workers needs PostgreSQL (CASEBRIDGE_DATABASE_URL=postgresql://...): processes sharing an SQLite "
                "file wait on its one write lock")
    return None


def serve(settings: Settings, workers: int) -> None:
    """Check the configuration once, here, then hand the port to uvicorn's supervisor and ``workers`` processes."""
    import uvicorn

    reason = refusal(settings)
    if reason is not None:
        console.print(f"[red]{reason}.[/red]", soft_wrap=True)
        raise typer.Exit(2)
    checked = build_broker(settings, migrate=False)  # a mistake is listed once, not by every process
    try:
        checked.require_schema()
    finally:
        checked.shutdown()
    os.environ["CASEBRIDGE_HTTP_HOST"] = settings.http_host
    os.environ["CASEBRIDGE_HTTP_PORT"] = str(settings.http_port)
    own_metrics_dir = METRICS_DIR_VARIABLE not in os.environ
    metrics_dir = Path(os.environ.get(METRICS_DIR_VARIABLE) or tempfile.mkdtemp(prefix="casebridge-metrics-"))
    _empty(metrics_dir)  # counts of processes from an earlier run would otherwise be added in
    os.environ[METRICS_DIR_VARIABLE] = str(metrics_dir)
    os.environ[SUPERVISOR_VARIABLE] = str(os.getpid())
    console.print(f"Casebridge listening on http://{settings.http_host}:{settings.http_port} with {workers} API "
                  "processes (API docs at /docs)")
    try:
        uvicorn.run("broker.cli.api_processes:app_for_process", factory=True, workers=workers,
                    host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def app_for_process() -> object:
    """One API process's app: its broker built from the settings, its relay started, shut down with the server."""
    import anyio

    from broker.runtime.gc_tuning import settle_after_start

    broker = build_broker(load_settings(), migrate=False)
    broker.require_schema()
    broker.start_relay()
    app = broker.api_app()
    _stop_when_orphaned()

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        settle_after_start()
        yield
        await anyio.to_thread.run_sync(broker.shutdown)

    app.router.lifespan_context = lifespan
    return app


def _stop_when_orphaned(poll_seconds: float = 1.0) -> None:
    """Stop this process the way the supervisor would (SIGTERM) should the supervisor itself die without stopping
    it: an API process nobody supervises would go on answering on the port."""
    supervisor = int(os.environ.get(SUPERVISOR_VARIABLE) or os.getppid())

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _empty(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
