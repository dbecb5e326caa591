"""Each run of a schedule and how it went: for ``broker batch list`` and the console's dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.logging import describe_error
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import ScheduleFiring, ScheduleRun

log = structlog.get_logger("casebridge.scheduler")


def start_run(store: Store, schedule: str, outcome: str = "running") -> int:
    with store.transaction() as session:
        run = ScheduleRun(schedule=schedule, started_at=utc_now(), outcome=outcome, summary={})
        session.add(run)
        session.flush()
        return run.id


def finish_run(store: Store, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
    with store.transaction() as session:
        session.execute(update(ScheduleRun).where(ScheduleRun.id == run_id)
                        .values(outcome=outcome, summary=summary, finished_at=utc_now()))


def finish_run_quietly(store: Store, run_id: int | None, outcome: str, summary: dict[str, Any]) -> None:
    """Record how a run ended; a store that cannot take it never stops the scheduler."""
    if run_id is None:
        return
    try:
        finish_run(store, run_id, outcome, summary)
    except Exception as exc:
        log.warning("schedule.run_not_recorded", run_id=run_id, error=describe_error(exc))


def start_run_quietly(store: Store, schedule: str) -> int | None:
    try:
        return start_run(store, schedule)
    except Exception as exc:
        log.warning("schedule.run_not_recorded", schedule=schedule, error=describe_error(exc))
        return None


def latest_runs(session: Session) -> dict[str, ScheduleRun]:
    """The latest run of every schedule that has run."""
    newest = select(func.max(ScheduleRun.id)).group_by(ScheduleRun.schedule).scalar_subquery()
    return {run.schedule: run for run in session.scalars(select(ScheduleRun).where(ScheduleRun.id.in_(newest)))}


def last_runs(store: Store) -> dict[str, ScheduleRun]:
    with store.read() as session:
        return latest_runs(session)


def summary_text(summary: dict[str, Any] | None) -> str:
    """A run's summary in one line, e.g. ``rows 120, files 1, failures 0``."""
    return ", ".join(f"{key} {value}" for key, value in (summary or {}).items()) or "done"


def claim_firing(store: Store, schedule: str, due_at: datetime, holder: str) -> bool:
    """Claim one firing of ``schedule`` for this scheduler: True for the one that may run it, False for every other
    (or if the store cannot be reached, when nobody can)."""
    try:
        with store.transaction() as session:
            session.add(ScheduleFiring(schedule=schedule, due_at=due_at, claimed_by=holder, claimed_at=utc_now()))
    except IntegrityError:
        return False
    except Exception as exc:
        log.warning("schedule.firing_not_claimed", schedule=schedule, error=describe_error(exc))
        return False
    return True


def ran_since(store: Store, schedule: str, since: datetime) -> bool:
    """Whether the schedule has a recorded run or firing at or after ``since``."""
    with store.read() as session:
        run = session.scalar(select(func.count()).select_from(ScheduleRun).where(
            ScheduleRun.schedule == schedule, ScheduleRun.started_at >= since))
        firing = session.scalar(select(func.count()).select_from(ScheduleFiring).where(
            ScheduleFiring.schedule == schedule, ScheduleFiring.due_at >= since))
    return bool(run or firing)


def last_firings(store: Store) -> dict[str, ScheduleFiring]:
    """The latest claimed firing of every schedule."""
    with store.read() as session:
        newest = (select(ScheduleFiring.schedule, func.max(ScheduleFiring.due_at).label("due_at"))
                  .group_by(ScheduleFiring.schedule).subquery())
        return {firing.schedule: firing for firing in session.scalars(
            select(ScheduleFiring).join(newest, (ScheduleFiring.schedule == newest.c.schedule)
                                        & (ScheduleFiring.due_at == newest.c.due_at)))}
