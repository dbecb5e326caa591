"""Runs schedules at their cron times, one job at a time, on its own thread; each firing runs once.

However many schedulers are up (``broker scheduler`` or ``broker run`` processes), each firing is claimed in the
store by one of them (:class:`~broker.store.tables.ScheduleFiring`), which runs it; the others leave it. A firing
missed while no scheduler was up is run once when one starts, if it is within the schedule's
``misfire_grace_minutes`` (several missed firings of a schedule make one run).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from broker.errors import JobFailed
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.scheduling.context import JobContext
from broker.scheduling.jobs import JOBS, RECORDS_OWN_RUNS
from broker.scheduling.schedules import Schedule
from broker.store.schedule_runs import claim_firing, finish_run_quietly, ran_since, start_run_quietly

log = structlog.get_logger("casebridge.scheduler")


class Scheduler(threading.Thread):
    def __init__(self, context: JobContext, schedules: list[Schedule], *, stop: threading.Event,
                 after_run: Callable[[], None] | None = None) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.context = context
        self.schedules = [schedule for schedule in schedules if schedule.enabled]
        self.stop_event = stop
        self.after_run = after_run
        self.next_runs: dict[str, datetime] = {}
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run(self) -> None:
        now = utc_now()
        self.next_runs = {schedule.name: schedule.next_run(now) for schedule in self.schedules}
        log.info("scheduler.started", schedules=sorted(self.next_runs))
        for schedule in self.schedules:
            self.catch_up(schedule, now)
        while not self.stop_event.is_set():
            now = utc_now()
            for schedule in self.schedules:
                due = self.next_runs[schedule.name]
                if due <= now:
                    self.fire(schedule, due)
                    self.next_runs[schedule.name] = schedule.next_run(utc_now())
            soonest = min(self.next_runs.values(), default=None)
            wait = 60.0 if soonest is None else max(0.5, min(60.0, (soonest - utc_now()).total_seconds()))
            self.stop_event.wait(wait)

    def catch_up(self, schedule: Schedule, now: datetime) -> bool:
        """Run the schedule's last firing if no scheduler ran it (none was up) and it is within the grace."""
        grace = timedelta(minutes=schedule.misfire_grace_minutes)
        missed = schedule.previous_run(now)
        if grace <= timedelta(0) or now - missed > grace or ran_since(self.context.store, schedule.name, missed):
            return False
        log.warning("schedule.missed", schedule=schedule.name, due_at=missed.isoformat(),
                    note="no scheduler was up when it was due: it runs now, once")
        return self.fire(schedule, missed)

    def fire(self, schedule: Schedule, due: datetime) -> bool:
        """Run one firing, if this scheduler is the one that claims it; True if it ran here."""
        if not claim_firing(self.context.store, schedule.name, due.astimezone(UTC), self.holder):
            log.info("schedule.taken", schedule=schedule.name, due_at=due.isoformat(),
                     note="another scheduler runs this firing")
            return False
        self.run_now(schedule)
        return True

    def run_now(self, schedule: Schedule) -> dict[str, object]:
        """Run one schedule's job now; its run is recorded and logged, and nothing it raises stops the scheduler."""
        started = utc_now()
        try:
            result = run_recorded(self.context, schedule)
        except JobFailed as exc:
            log.error("schedule.failed", schedule=schedule.name, job=schedule.job, error=exc.message,
                      seconds=round((utc_now() - started).total_seconds(), 3), summary=exc.summary)
            self._after_run()  # what the parts that worked produced goes out at once
            return {"error": exc.message, **exc.summary}
        except Exception as exc:
            log.error("schedule.failed", schedule=schedule.name, job=schedule.job, error=describe_error(exc))
            return {"error": str(exc)}
        log.info("schedule.ran", schedule=schedule.name, job=schedule.job,
                 seconds=round((utc_now() - started).total_seconds(), 3), **result)
        self._after_run()
        return result

    def _after_run(self) -> None:
        if self.after_run is not None:
            self.after_run()


def run_recorded(context: JobContext, schedule: Schedule) -> dict[str, Any]:
    """Run ``schedule``'s job once and record the run, unless the job records its own (batch jobs do).

    A run is recorded ``succeeded`` with the job's summary, or ``failed``: with the job's summary and ``error`` when
    it raised JobFailed (it tried every part and some failed, e.g. one target of a poll), or with ``error`` alone
    when it raised anything else. The exception is raised again for the caller once the run is recorded.
    """
    store = context.store
    run_id = None if schedule.job in RECORDS_OWN_RUNS else start_run_quietly(store, schedule.name)
    started = time.monotonic()
    try:
        result = JOBS[schedule.job](replace(context, schedule=schedule.name), schedule.options)
    except JobFailed as exc:
        finish_run_quietly(store, run_id, "failed", {"error": exc.message, **exc.summary})
        count_run(schedule, exc.summary, time.monotonic() - started)
        raise
    except Exception as exc:
        finish_run_quietly(store, run_id, "failed", {"error": describe_error(exc)})
        raise
    finish_run_quietly(store, run_id, "succeeded", result)
    count_run(schedule, result, time.monotonic() - started)
    return result


def count_run(schedule: Schedule, summary: dict[str, Any], seconds: float) -> None:
    """A run's figures into the metrics: a batch run's rows and duration, a poll's changes per target."""
    from broker.operations import metrics

    if schedule.job.startswith("batch."):
        metrics.BATCH_ROWS.labels(schedule.name).inc(int(summary.get("rows", 0) or 0))
        metrics.BATCH_DURATION.labels(schedule.name).observe(seconds)
    elif schedule.job == "lob.poll_status_changes":
        for target, polled in (summary.get("targets") or {}).items():
            if isinstance(polled, dict):
                metrics.LOB_UPDATES.labels(target).inc(int(polled.get("changes", 0) or 0))
