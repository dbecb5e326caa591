"""Runs schedules at their next cron time, one job at a time, on its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

import structlog

from broker.jobs import JOBS, JobContext
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.schedules import Schedule
from broker.store.schedule_runs import record_run

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
        started = utc_now()
        try:
            result = JOBS[schedule.job](self.context, schedule.options)
        except Exception as exc:
            log.error("schedule.failed", schedule=schedule.name, job=schedule.job, error=describe_error(exc))
            record_run(self.context.store, schedule.name, started, "error", describe_error(exc))
            return {"error": str(exc)}
        record_run(self.context.store, schedule.name, started, "ok",
                   ", ".join(f"{key} {value}" for key, value in result.items()) or "done")
        log.info("schedule.ran", schedule=schedule.name, job=schedule.job,
                 seconds=round((utc_now() - started).total_seconds(), 3), **result)
        if self.after_run is not None:
            self.after_run()
        return result
