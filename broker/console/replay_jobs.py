"""Bulk replay: a dry run first, then rate-limited batches on a background thread, with progress and cancel.

A job snapshots the failed messages it covers when it starts (``replay_job_items``), so progress survives a page
reload or a restart, and the outcome of each replayed delivery (delivered, failed again) is read from the store.
Failures that arrive on the job's targets while it runs are counted, so the officer sees a relapse at once.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import structlog
from pydantic import BaseModel
from sqlalchemy import func, insert, literal, select, update

from broker.errors import CasebridgeError
from broker.failures.actions import replay
from broker.failures.queries import ListFilter, filtered
from broker.intake.transaction import Intake
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import DeliveryRecord, FailedMessage, ReplayJob, ReplayJobItem

log = structlog.get_logger("casebridge.console.replay")

DEFAULT_BATCH = 50
DEFAULT_PAUSE_SECONDS = 2.0


class DryRun(BaseModel):
    count: int
    targets: dict[str, int]


class JobProgress(BaseModel):
    id: int
    description: str
    created_by: str
    created_at: datetime
    state: str
    total: int
    done: int
    refused: int
    delivered: int
    failed_again: int
    new_failures: int
    targets: list[str]
    batch_size: int
    pause_seconds: float
    finished_at: datetime | None


def dry_run(store: Store, where: ListFilter) -> DryRun:
    with store.read() as session:
        rows = session.execute(filtered(
            select(FailedMessage.target, func.count()).group_by(FailedMessage.target), where)).all()
    targets = {target or "(intake)": count for target, count in rows}
    return DryRun(count=sum(targets.values()), targets=targets)


def start_job(store: Store, where: ListFilter, *, actor: str, description: str, batch_size: int = DEFAULT_BATCH,
              pause_seconds: float = DEFAULT_PAUSE_SECONDS) -> int:
    """Record the job and the messages it covers (open ones matching ``where`` now)."""
    preview = dry_run(store, where)
    with store.transaction() as session:
        job = ReplayJob(created_by=actor, created_at=utc_now(), description=description[:500], state="running",
                        total=0, done=0, refused=0, batch_size=max(1, min(batch_size, 500)),
                        pause_seconds=max(0.0, min(pause_seconds, 600.0)), targets=sorted(preview.targets))
        session.add(job)
        session.flush()
        chosen = filtered(select(literal(job.id), FailedMessage.id, FailedMessage.delivery_id,
                                 literal("waiting")), where)
        session.execute(insert(ReplayJobItem).from_select(["job_id", "failed_id", "delivery_id", "state"], chosen))
        job.total = session.scalar(select(func.count()).select_from(ReplayJobItem)
                                   .where(ReplayJobItem.job_id == job.id)) or 0
        return job.id


def cancel_job(store: Store, job_id: int) -> bool:
    with store.transaction() as session:
        result = session.execute(update(ReplayJob).where(ReplayJob.id == job_id, ReplayJob.state == "running")
                                 .values(state="cancelled", finished_at=utc_now()))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def progress(store: Store, job_id: int) -> JobProgress | None:
    with store.read() as session:
        job = session.get(ReplayJob, job_id)
        if job is None:
            return None
        outcomes = dict(session.execute(
            select(DeliveryRecord.state, func.count())
            .join(ReplayJobItem, ReplayJobItem.delivery_id == DeliveryRecord.id)
            .where(ReplayJobItem.job_id == job_id, ReplayJobItem.state == "queued").group_by(DeliveryRecord.state)
        ).all())
        since_start = select(func.count()).select_from(FailedMessage).where(
            FailedMessage.state == "open", FailedMessage.first_failed_at >= job.created_at,
            FailedMessage.target.in_(job.targets))
        arrived = session.scalar(since_start) or 0
    failed_again = outcomes.get("failed", 0)
    return JobProgress(
        id=job.id, description=job.description, created_by=job.created_by, created_at=job.created_at,
        state=job.state, total=job.total, done=job.done, refused=job.refused,
        delivered=outcomes.get("delivered", 0), failed_again=failed_again,
        new_failures=max(0, arrived - failed_again), targets=list(job.targets), batch_size=job.batch_size,
        pause_seconds=job.pause_seconds, finished_at=job.finished_at,
    )


def recent_jobs(store: Store, limit: int = 20) -> list[JobProgress]:
    with store.read() as session:
        ids = session.scalars(select(ReplayJob.id).order_by(ReplayJob.id.desc()).limit(limit)).all()
    return [job for job in (progress(store, job_id) for job_id in ids) if job is not None]


class ReplayRunner(threading.Thread):
    """Works through running jobs one batch at a time, pausing between batches so a recovering system is not
    flooded. One per API process; on PostgreSQL several share the work without taking the same item."""

    def __init__(self, store: Store, intake: Intake, *, stop: threading.Event,
                 after_batch: object = None, idle_seconds: float = 2.0) -> None:
        super().__init__(name="console-replay", daemon=True)
        self.store, self.intake, self.stop_event = store, intake, stop
        self.after_batch = after_batch
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                pause = self.step()
            except Exception as exc:  # keep the runner alive; the job stays running and is picked up again
                log.error("replay_job.error", error=describe_error(exc))
                pause = self.idle_seconds
            self._rest(pause)

    def _rest(self, seconds: float) -> None:
        """Wait between batches; a new job, or the process stopping, cuts the wait short."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and not self.wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.wake.wait(min(remaining, 0.5))
        self.wake.clear()

    def step(self) -> float:
        """Replay one batch of the oldest running job; returns how long to wait before the next."""
        with self.store.read() as session:
            job = session.scalars(select(ReplayJob).where(ReplayJob.state == "running").order_by(ReplayJob.id)
                                  .limit(1)).first()
        if job is None:
            return self.idle_seconds
        with self.store.transaction() as session:
            query = (select(ReplayJobItem.failed_id).where(ReplayJobItem.job_id == job.id,
                                                           ReplayJobItem.state == "waiting")
                     .order_by(ReplayJobItem.failed_id).limit(job.batch_size))
            if self.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            batch = list(session.scalars(query))
            session.execute(update(ReplayJobItem).where(ReplayJobItem.job_id == job.id,
                                                        ReplayJobItem.failed_id.in_(batch))
                            .values(state="replaying"))
        if not batch:
            self._finish(job.id)
            return 0.0
        for failed_id in batch:
            if self._cancelled(job.id):
                self._reset(job.id)
                return 0.0
            state, note = "queued", None
            try:
                note = replay(self.store, self.intake, failed_id, actor=job.created_by)
            except CasebridgeError as exc:
                state, note = "refused", str(exc)
            with self.store.transaction() as session:
                session.execute(update(ReplayJobItem).where(ReplayJobItem.job_id == job.id,
                                                            ReplayJobItem.failed_id == failed_id)
                                .values(state=state, note=note[:500] if note else None))
                session.execute(update(ReplayJob).where(ReplayJob.id == job.id).values(
                    done=ReplayJob.done + 1, refused=ReplayJob.refused + (1 if state == "refused" else 0)))
        if callable(self.after_batch):
            self.after_batch()
        log.info("replay_job.batch", job=job.id, replayed=len(batch))
        return job.pause_seconds

    def _cancelled(self, job_id: int) -> bool:
        with self.store.read() as session:
            return session.scalar(select(ReplayJob.state).where(ReplayJob.id == job_id)) != "running"

    def _reset(self, job_id: int) -> None:
        with self.store.transaction() as session:
            session.execute(update(ReplayJobItem).where(ReplayJobItem.job_id == job_id,
                                                        ReplayJobItem.state == "replaying").values(state="waiting"))

    def _finish(self, job_id: int) -> None:
        with self.store.transaction() as session:
            session.execute(update(ReplayJob).where(ReplayJob.id == job_id, ReplayJob.state == "running")
                            .values(state="finished", finished_at=utc_now()))
