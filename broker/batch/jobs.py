"""The ``batch.export`` and ``batch.import`` jobs: a lease on the schedule, a run record, then the work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel

from broker.batch.config import ExportOptions, ImportOptions
from broker.batch.export import run_export
from broker.batch.importer import run_import
from broker.batch.ledger import acquire_lock, new_holder, release_lock, renew_lock
from broker.errors import JobFailed
from broker.store.schedule_runs import finish_run, start_run

if TYPE_CHECKING:
    from broker.scheduling.context import JobContext

log = structlog.get_logger("casebridge.batch")


def export_job(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Export the target's pending batch deliveries as one CSV file (see ``broker.batch.export``)."""
    parsed = ExportOptions.model_validate(options)
    schedule = context.schedule or f"export-{parsed.target}"
    return _leased(context, schedule, parsed.lock_minutes,
                   lambda: run_export(context, parsed, schedule).summary())


def import_job(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Take in the target's new files (see ``broker.batch.importer``)."""
    parsed = ImportOptions.model_validate(options)
    schedule = context.schedule or f"import-{parsed.target}"
    return _leased(context, schedule, parsed.lock_minutes,
                   lambda: run_import(context, parsed, schedule).summary())


def _leased(context: JobContext, schedule: str, lock_minutes: float,
            work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` only if this process gets the schedule's lease; record the run and its outcome."""
    store, holder = context.store, new_holder()
    if not acquire_lock(store, schedule, holder, timedelta(minutes=lock_minutes)):
        summary = {"skipped": "another process is running this schedule"}
        finish_run(store, start_run(store, schedule), "skipped", summary)
        log.info("batch.skipped", schedule=schedule)
        return summary
    run_id = start_run(store, schedule)
    lease, done = timedelta(minutes=lock_minutes), threading.Event()
    heartbeat = threading.Thread(target=_keep_lease, args=(context, schedule, holder, lease, done),
                                 name=f"lease-{schedule}", daemon=True)
    heartbeat.start()
    try:
        summary = work()
    except JobFailed as exc:
        finish_run(store, run_id, "failed", {"error": exc.message, **exc.summary})
        raise
    except Exception as exc:
        finish_run(store, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    finally:
        done.set()
        heartbeat.join()
        release_lock(store, schedule, holder)
    finish_run(store, run_id, "succeeded" if not summary.get("failures") else "with_failures", summary)
    return summary


def _keep_lease(context: JobContext, schedule: str, holder: str, lease: timedelta, done: threading.Event) -> None:
    """Renew the lease every third of its length while the run lasts, so a long run is never taken over; a
    process that dies stops renewing, and its lease runs out."""
    while not done.wait(lease.total_seconds() / 3):
        try:
            if not renew_lock(context.store, schedule, holder, lease):
                log.warning("batch.lease_lost", schedule=schedule)
                return
        except Exception as exc:  # a store blip: try again at the next beat
            log.warning("batch.lease_not_renewed", schedule=schedule, error=type(exc).__name__)


#: Options models of the batch jobs, so ``broker check`` reports bad options with file and line.
OPTION_MODELS: dict[str, type[BaseModel]] = {"batch.export": ExportOptions, "batch.import": ImportOptions}
