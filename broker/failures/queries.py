"""Finding and reading failed messages: one filter, one query, for the CLI and the console alike.

Everything filters, sorts, counts and pages in the database (the indexes are in :mod:`broker.store.tables`), so a
list stays quick with a million failed messages: ``broker failed list`` is the console's first page, as wide as
asked for.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Select, func, select

from broker.errors import CasebridgeError
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, FailedMessage

#: The audit steps that record one delivery attempt going wrong.
ATTEMPT_STEPS = ("attempt_failed", "retry_scheduled", "failed")


class AttemptView(BaseModel):
    """One failed attempt: when, and what the target or the adapter said."""

    at: datetime
    step: str
    reason: str | None
    message: str | None


class FailedView(BaseModel):
    """A failed message as support staff see it."""

    id: int
    stage: str
    state: str
    target: str | None
    case_id: str | None
    source: str | None
    service_code: str | None
    event_id: str | None
    error_class: str
    reason: str
    error_text: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution_note: str | None = None
    raw_body: str | None = None
    attempt_history: list[AttemptView] = []


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




def list_failed(store: Store, where: ListFilter, *, limit: int = 200) -> list[FailedView]:
    """The newest ``limit`` failed messages that ``where`` picks."""
    return failed_page(store, where, 1, size=limit).rows


def show_failed(store: Store, failed_id: int) -> FailedView | None:
    with store.read() as session:
        failed = session.get(FailedMessage, failed_id)
        if failed is None:
            return None
        case = session.get(CaseRecord, failed.case_pk) if failed.case_pk else None
        view = failed_view(failed, case.case_id if case else None, case.source if case else None,
                     case.service_code if case else None)
        if failed.raw_body is not None:
            view.raw_body = failed.raw_body.decode("utf-8", errors="replace")
        if failed.event_id and failed.target:
            entries = session.scalars(
                select(AuditEntry).where(AuditEntry.event_id == failed.event_id, AuditEntry.target == failed.target,
                                         AuditEntry.step.in_(ATTEMPT_STEPS)).order_by(AuditEntry.id)
            )
            view.attempt_history = [AttemptView(at=entry.at, step=entry.step, reason=entry.detail.get("reason"),
                                                message=entry.detail.get("message")) for entry in entries]
        return view


def failed_view(failed: FailedMessage, case_id: str | None, source: str | None,
                service_code: str | None) -> FailedView:
    return FailedView(
        id=failed.id, stage=failed.stage, state=failed.state, target=failed.target, case_id=case_id,
        source=source, service_code=service_code, event_id=failed.event_id, error_class=failed.error_class,
        reason=failed.reason, error_text=failed.error_text, attempts=failed.attempts,
        first_failed_at=failed.first_failed_at, last_failed_at=failed.last_failed_at,
        resolved_by=failed.resolved_by, resolved_at=failed.resolved_at, resolution_note=failed.resolution_note,
    )


