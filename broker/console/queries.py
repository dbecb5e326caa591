"""What the console reads: failed messages page by page, grouped by cause, the dashboard and case search.

Everything filters, sorts, counts and pages in the database (the indexes are in tables.py), so the pages stay
quick with a million failed messages.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from broker.failures.queries import LONDON, PAGE_SIZE, clamp_page
from broker.model.events import utc_now
from broker.scheduling.schedules import Schedule
from broker.store.database import Store
from broker.store.schedule_runs import latest_runs, summary_text
from broker.store.tables import (
    CaseRecord,
    DeliveryRecord,
    ExternalRef,
    FailedMessage,
    TargetCircuit,
)


class TargetSummary(BaseModel):
    target: str
    delivered_today: int
    pending: int
    retrying: int
    failed: int
    circuit: str
    last_success: datetime | None


class ScheduleSummary(BaseModel):
    name: str
    job: str
    last_run: datetime | None
    outcome: str | None
    summary: str | None
    next_run: datetime | None


def dashboard(store: Store, targets: list[str], schedules: list[Schedule]) -> tuple[list[TargetSummary],
                                                                                     list[ScheduleSummary]]:
    today = datetime.combine(utc_now().astimezone(LONDON).date(), time(), LONDON)
    with store.read() as session:
        states: dict[str, dict[str, int]] = {}
        for target, state, count in session.execute(
            select(DeliveryRecord.target, DeliveryRecord.state, func.count())
            .where(DeliveryRecord.state.in_((*DELIVERY_VIEWS["pending"], "retrying")))
            .group_by(DeliveryRecord.target, DeliveryRecord.state)
        ):
            states.setdefault(target, {})[state] = count
        today_counts = dict(session.execute(
            select(DeliveryRecord.target, func.count()).where(DeliveryRecord.state == "delivered",
                                                              DeliveryRecord.delivered_at >= today)
            .group_by(DeliveryRecord.target)).all())
        last_success = dict(session.execute(
            select(DeliveryRecord.target, func.max(DeliveryRecord.delivered_at)).group_by(DeliveryRecord.target)
        ).all())
        failed = dict(session.execute(
            select(FailedMessage.target, func.count()).where(FailedMessage.state == "open")
            .group_by(FailedMessage.target)).all())
        circuits = dict(session.execute(select(TargetCircuit.target, TargetCircuit.state)).all())
        runs = latest_runs(session)
    summaries = [TargetSummary(
        target=name, delivered_today=today_counts.get(name, 0),
        pending=sum(states.get(name, {}).get(s, 0) for s in DELIVERY_VIEWS["pending"]),
        retrying=states.get(name, {}).get("retrying", 0), failed=failed.get(name, 0),
        circuit=circuits.get(name, "closed"), last_success=last_success.get(name),
    ) for name in targets]
    now = utc_now()
    schedule_rows = []
    for schedule in schedules:
        run = runs.get(schedule.name)
        schedule_rows.append(ScheduleSummary(
            name=schedule.name, job=schedule.job, last_run=run.started_at if run else None,
            outcome=run.outcome if run else None, summary=summary_text(run.summary) if run else None,
            next_run=schedule.next_run(now) if schedule.enabled else None,
        ))
    return summaries, schedule_rows


#: The dashboard's columns, as delivery states.
DELIVERY_VIEWS = {
    # Not delivered yet, and not failed: queued, behind an earlier event, being sent, or an unconfirmed create
    # waiting for reconciliation.
    "pending": ("pending", "waiting", "in_flight", "unconfirmed"),
    "retrying": ("retrying",),
    "delivered": ("delivered",),
}


class DeliveryRow(BaseModel):
    case_pk: str
    case_id: str
    service_code: str
    target: str
    state: str
    attempts: int
    external_ref: str | None
    last_error: str | None
    updated_at: datetime
    next_attempt_at: datetime | None


class DeliveryPage(BaseModel):
    rows: list[DeliveryRow]
    total: int
    page: int
    pages: int


def deliveries_page(store: Store, target: str, view: str, page: int = 1, size: int = PAGE_SIZE) -> DeliveryPage:
    """The deliveries behind a dashboard number: a target's pending, retrying or today's delivered ones."""
    states = DELIVERY_VIEWS.get(view, DELIVERY_VIEWS["pending"])
    condition = [DeliveryRecord.target == target, DeliveryRecord.state.in_(states)]
    if view == "delivered":
        condition.append(DeliveryRecord.delivered_at >= datetime.combine(utc_now().astimezone(LONDON).date(), time(),
                                                                          LONDON))
    with store.read() as session:
        total = session.scalar(select(func.count()).select_from(DeliveryRecord).where(*condition)) or 0
        page = clamp_page(page, total, size)
        rows = session.execute(
            select(DeliveryRecord, CaseRecord.case_id, CaseRecord.service_code)
            .join(CaseRecord, CaseRecord.id == DeliveryRecord.case_pk).where(*condition)
            .order_by(DeliveryRecord.updated_at.desc(), DeliveryRecord.id.desc())
            .limit(size).offset((page - 1) * size)
        ).all()
    return DeliveryPage(rows=[DeliveryRow(
        case_pk=row.DeliveryRecord.case_pk, case_id=row.case_id, service_code=row.service_code,
        target=row.DeliveryRecord.target, state=row.DeliveryRecord.state, attempts=row.DeliveryRecord.attempts,
        external_ref=row.DeliveryRecord.external_ref, last_error=row.DeliveryRecord.last_error,
        updated_at=row.DeliveryRecord.updated_at, next_attempt_at=row.DeliveryRecord.next_attempt_at,
    ) for row in rows], total=total, page=page, pages=max(1, -(-total // size)))


def search_cases(store: Store, text: str, *, by_email: bool) -> list[CaseRecord]:
    """Cases by our case id, the sender's, a LOB reference, or (for operators) the reporter's email."""
    text = text.strip()
    if not text:
        return []
    with store.read() as session:
        conditions = [CaseRecord.case_id == text, CaseRecord.id == text.removeprefix("CB-"),
                      CaseRecord.id.in_(select(ExternalRef.case_pk).where(ExternalRef.reference == text))]
        found = list(session.scalars(select(CaseRecord).where(or_(*conditions)).limit(50)))
        if by_email and "@" in text and not found:
            found = _by_email(session, text.lower())
    return found


def _by_email(session: Session, email: str) -> list[CaseRecord]:
    # Reporter emails live inside the case snapshot (personal data has no column of its own); the scan is bounded
    # to the most recent cases and only operators may search this way.
    recent = session.scalars(select(CaseRecord).order_by(CaseRecord.created_at.desc()).limit(20_000))
    return [case for case in recent if email in _emails(case.snapshot)][:50]


def _emails(snapshot: dict[str, Any]) -> set[str]:
    reporter = snapshot.get("reporter") or {}
    people = [reporter.get(key) or {} for key in ("person", "representative", "on_behalf_of")]
    return {str(person.get("email", "")).lower() for person in people if person.get("email")}
