"""Runs schedules at their next cron time, one job at a time, on its own thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog

from broker.errors import JobFailed
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.scheduling.context import JobContext
from broker.scheduling.jobs import JOBS, RECORDS_OWN_RUNS
from broker.scheduling.schedules import Schedule
from broker.store.schedule_runs import finish_run_quietly, start_run_quietly

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

    def run(self) -> None:
        now = utc_now()
        self.next_runs = {schedule.name: schedule.next_run(now) for schedule in self.schedules}
        log.info("scheduler.started", schedules=sorted(self.next_runs))
        while not self.stop_event.is_set():
            now = utc_now()
            for schedule in self.schedules:
                if self.next_runs[schedule.name] <= now:
                    self.run_now(schedule)
                    self.next_runs[schedule.name] = schedule.next_run(utc_now())
            soonest = min(self.next_runs.values(), default=None)
            wait = 60.0 if soonest is None else max(0.5, min(60.0, (soonest - utc_now()).total_seconds()))
            self.stop_event.wait(wait)

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
