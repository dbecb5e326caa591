"""What the console reads: failed messages page by page, grouped by cause, the dashboard and case search.

Everything filters, sorts, counts and pages in the database (the indexes are in tables.py), so the pages stay
quick with a million failed messages.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from broker.errors import CasebridgeError
from broker.failures.actions import FailedView, failed_view
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

PAGE_SIZE = 50
#: The furthest page asked for is clamped to this (a page past the last shows the last).
MAX_PAGE = 1_000_000
LONDON = ZoneInfo("Europe/London")

#: Plain words for the machine-readable reasons, for people who are not programmers.
REASON_WORDS = {
    "http_400": "the system refused the data as malformed",
    "http_401": "the system refused our credentials",
    "http_403": "the system refused our credentials",
    "http_404": "the system could not find what we referred to",
    "http_409": "the system says it already has a conflicting record",
    "http_422": "the system refused the data",
    "http_429": "the system asked us to slow down",
    "http_500": "the system had an internal error",
    "http_502": "the system was unreachable behind its gateway",
    "http_503": "the system was down or under maintenance",
    "http_504": "the system took too long to answer",
    "timeout": "the system took too long to answer",
    "connection_error": "we could not connect to the system",
    "invalid_json": "the message was not readable JSON",
    "invalid_envelope": "the message was missing fields or had wrong values",
    "routing_key_mismatch": "the message was published under the wrong event type",
    "publisher_not_allowed": "the account that published the message may not speak for its source system",
    "rejected": "the message was refused when it arrived",
    "too_large": "the message was too large",
    "response_too_large": "the system's answer was larger than we accept",
    "poison_message": "the message repeatedly crashed the worker handling it",
    "delivery_unconfirmed": "it may already be in the target system: an attempt may have landed, and a search did "
                            "not find it",
    "unmapped_service_code": "this service has no code in the target system",
    "unexpected_error": "an unexpected error in Casebridge",
}


def plain_reason(reason: str) -> str:
    return REASON_WORDS.get(reason, reason.replace("_", " "))


class FilterFields(BaseModel):
    """What the failed list can be narrowed by; an empty field matches everything."""

    target: str | None = None
    service: str | None = None
    error_class: str | None = None
    reason: str | None = None
    cause: str | None = None
    case_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class ListFilter(FilterFields, frozen=True, extra="forbid"):
    """The failed list's filters, with the state it shows; empty ones match everything. A misspelt field is an
    error, never a filter silently widened to every failure."""

    state: str | None = "open"
    #: Only these failed messages (None: no such limit; empty: none at all).
    ids: tuple[int, ...] | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as URL query parameters (for links, and to carry it into a replay)."""
        values: dict[str, str] = {}
        for name in ("target", "service", "error_class", "reason", "cause", "case_id", "state"):
            value = getattr(self, name)
            if value:
                values[name] = value
        if self.since:
            values["since"] = self.since.date().isoformat()
        if self.until:
            values["until"] = (self.until - timedelta(days=1)).date().isoformat()
        return values

    @property
    def is_empty(self) -> bool:
        return self.ids is None and not any(getattr(self, name) for name in FilterFields.model_fields)


class BadFilter(CasebridgeError):
    """A filter value that means nothing (a date that is not one)."""


def day_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``since``/``until`` as whole days in UK time: from the start of one to the end of the other.

    Raises BadFilter, naming the field, for anything that is not a date."""
    def start_of(name: str, day: str) -> datetime:
        try:
            return datetime.combine(datetime.fromisoformat(day.strip()).date(), time(), LONDON)
        except ValueError:
            raise BadFilter(f"{name}: {day[:40]!r} is not a date; write it as YYYY-MM-DD") from None

    end = start_of("until", until) if until else None
    if end is not None and end.date() == datetime.max.date():
        raise BadFilter("until: that is past the last date there is")
    return (start_of("since", since) if since else None, end + timedelta(days=1) if end else None)


def clamp_page(page: int, total: int, size: int) -> int:
    """A page that exists: at least the first, at most the last (and never past MAX_PAGE)."""
    return max(1, min(page, MAX_PAGE, -(-total // size)))


_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")


def filtered(query: _Query, where: ListFilter) -> _Query:
    if where.state:
        query = query.where(FailedMessage.state == where.state)
    if where.ids is not None:
        query = query.where(FailedMessage.id.in_(where.ids))
    if where.target:
        query = query.where(FailedMessage.target == where.target)
    if where.error_class:
        query = query.where(FailedMessage.error_class == where.error_class)
    if where.reason:
        query = query.where(FailedMessage.reason == where.reason)
    if where.cause is not None and where.cause != "":
        query = query.where(FailedMessage.cause == where.cause)
    if where.since:
        query = query.where(FailedMessage.last_failed_at >= where.since)
    if where.until:
        query = query.where(FailedMessage.last_failed_at < where.until)
    if where.service or where.case_id:
        cases = select(CaseRecord.id)
        if where.service:
            cases = cases.where(CaseRecord.service_code.like(where.service.replace("*", "%")))
        if where.case_id:
            wanted = where.case_id.strip()
            # An exact reference walks the index; '*' asks for a pattern, which reads the cases table.
            cases = cases.where(CaseRecord.case_id.like(wanted.replace("*", "%")) if "*" in wanted
                                else CaseRecord.case_id == wanted)
        query = query.where(FailedMessage.case_pk.in_(cases))
    return query


class FailedPage(BaseModel):
    rows: list[FailedView]
    total: int
    page: int
    pages: int


def failed_page(store: Store, where: ListFilter, page: int = 1, size: int = PAGE_SIZE) -> FailedPage:
    with store.read() as session:
        total = session.scalar(filtered(select(func.count()).select_from(FailedMessage), where)) or 0
        page = clamp_page(page, total, size)
        rows = [failed_view(row.FailedMessage, row.case_id, row.source, row.service_code)
                for row in session.execute(page_query(where, page, size))]
    return FailedPage(rows=rows, total=total, page=page, pages=max(1, -(-total // size)))


def page_query(where: ListFilter, page: int, size: int = PAGE_SIZE) -> Select[FailedMessage, str, str, str]:
    """One page of the list, newest first: an index walk on (state, last_failed_at, id), no sort."""
    return filtered(
        select(FailedMessage, CaseRecord.case_id, CaseRecord.source, CaseRecord.service_code)
        .outerjoin(CaseRecord, CaseRecord.id == FailedMessage.case_pk), where,
    ).order_by(FailedMessage.last_failed_at.desc(), FailedMessage.id.desc()).limit(size).offset((page - 1) * size)


def groups_query(where: ListFilter, limit: int = 200) -> Select[*tuple[Any, ...]]:
    count = func.count().label("count")
    return filtered(select(
        FailedMessage.target, FailedMessage.error_class, FailedMessage.reason, FailedMessage.cause, count,
        func.min(FailedMessage.first_failed_at).label("first"), func.max(FailedMessage.last_failed_at).label("last"),
    ), where).group_by(FailedMessage.target, FailedMessage.error_class, FailedMessage.reason, FailedMessage.cause
                       ).order_by(count.desc()).limit(limit)


class FailureGroup(BaseModel):
    target: str | None
    error_class: str
    reason: str
    cause: str
    count: int
    first_failed_at: datetime
    last_failed_at: datetime

    @property
    def plain(self) -> str:
        return plain_reason(self.reason)


def failure_groups(store: Store, where: ListFilter, limit: int = 200) -> list[FailureGroup]:
    """Open failures grouped by target, error class, reason and normalised message; biggest first."""
    with store.read() as session:
        rows = session.execute(groups_query(where, limit)).all()
    return [FailureGroup(target=row.target, error_class=row.error_class, reason=row.reason, cause=row.cause,
                         count=row.count, first_failed_at=row.first, last_failed_at=row.last) for row in rows]


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
