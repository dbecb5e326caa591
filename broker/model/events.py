"""Event envelopes: every message that crosses Casebridge is one of these.

``event_id`` is the idempotency key: the same event sent twice is one event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BeforeValidator, Field, StringConstraints, TypeAdapter, field_validator

from broker.model.case import NO_NUL, Case, CaseId, CaseStatus, Strict

SCHEMA_VERSION = "1.0"

SystemName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$"),
    Field(description="The sending system, lower case: `crm`, `portal`, `confirm`."),
]


class EventType(StrEnum):
    created = "case.created"
    updated = "case.updated"
    note_added = "case.note_added"
    status_changed = "case.status_changed"
    closed = "case.closed"


class CaseRef(Strict):
    """Names an existing case in events that do not resend it whole."""

    case_id: CaseId


class Note(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000), NO_NUL]
    author: Annotated[str, StringConstraints(max_length=200), NO_NUL] | None = None
    internal: bool = Field(False, description="Internal notes are never published to residents.")


class StatusChange(Strict):
    status: CaseStatus
    reason: Annotated[str, StringConstraints(max_length=2_000), NO_NUL] | None = Field(
        None, description="Text for the resident, e.g. 'repair booked for Tuesday'."
    )
    external_status_code: Annotated[str, StringConstraints(max_length=100), NO_NUL] | None = Field(
        None, description="The LOB system's own status code, kept for reference."
    )


def _iso_text_only(value: Any) -> Any:
    """Times are ISO 8601 text with a zone, as the published schema says; a bare number is not a time."""
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 date and time with a time zone, not a number")
    return value


#: Statuses a ``case.closed`` event may carry: the ways a case can end.
CLOSING_STATUSES = frozenset({
    CaseStatus.closed, CaseStatus.fixed, CaseStatus.no_further_action, CaseStatus.duplicate,
    CaseStatus.not_councils_responsibility,
})


class _Envelope(Strict):
    event_id: UUID = Field(description="Unique per event; the idempotency key.")
    schema_version: Literal["1.0"] = "1.0"
    occurred_at: Annotated[AwareDatetime, BeforeValidator(_iso_text_only)] = Field(
        description="When it happened at the source, with a time zone.",
    )
    source: SystemName
    correlation_id: Annotated[str, StringConstraints(min_length=1, max_length=100), NO_NUL] | None = Field(
        None, description="Ties together every message about one conversation; defaults to the event id."
    )

    @property
    def case_id(self) -> str:
        raise NotImplementedError

    @property
    def effective_correlation_id(self) -> str:
        return self.correlation_id or str(self.event_id)


class CaseCreated(_Envelope):
    event_type: Literal[EventType.created] = EventType.created
    case: Case

    @property
    def case_id(self) -> str:
        return self.case.case_id


class CaseUpdated(_Envelope):
    """The case as it now stands (the whole case, not a patch)."""

    event_type: Literal[EventType.updated] = EventType.updated
    case: Case

    @property
    def case_id(self) -> str:
        return self.case.case_id


class CaseNoteAdded(_Envelope):
    event_type: Literal[EventType.note_added] = EventType.note_added
    case: CaseRef
    note: Note

    @property
    def case_id(self) -> str:
        return self.case.case_id


class CaseStatusChanged(_Envelope):
    event_type: Literal[EventType.status_changed] = EventType.status_changed
    case: CaseRef
    change: StatusChange

    @property
    def case_id(self) -> str:
        return self.case.case_id


class CaseClosed(_Envelope):
    event_type: Literal[EventType.closed] = EventType.closed
    case: CaseRef
    change: StatusChange = Field(default_factory=lambda: StatusChange(status=CaseStatus.closed))

    @field_validator("change")
    @classmethod
    def _a_closing_status(cls, change: StatusChange) -> StatusChange:
        if change.status not in CLOSING_STATUSES:
            closing = ", ".join(sorted(status.value for status in CLOSING_STATUSES))
            raise ValueError(f"a case.closed event's status must be one of {closing}; send case.status_changed")
        return change

    @property
    def case_id(self) -> str:
        return self.case.case_id


FollowUpEvent = Annotated[
    CaseUpdated | CaseNoteAdded | CaseStatusChanged | CaseClosed, Field(discriminator="event_type")
]
Event = Annotated[
    CaseCreated | CaseUpdated | CaseNoteAdded | CaseStatusChanged | CaseClosed,
    Field(discriminator="event_type"),
]
AnyEvent = CaseCreated | CaseUpdated | CaseNoteAdded | CaseStatusChanged | CaseClosed

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)
FOLLOW_UP_ADAPTER: TypeAdapter[CaseUpdated | CaseNoteAdded | CaseStatusChanged | CaseClosed] = TypeAdapter(
    FollowUpEvent
)


def parse_event(raw: bytes | str) -> AnyEvent:
    """Parse and validate a JSON envelope of any event type (raises pydantic.ValidationError)."""
    return EVENT_ADAPTER.validate_json(raw)


def status_after(event: AnyEvent, current: CaseStatus) -> CaseStatus:
    """The case's canonical status once this event has been applied."""
    if isinstance(event, CaseCreated | CaseUpdated):
        return event.case.status
    if isinstance(event, CaseStatusChanged | CaseClosed):
        return event.change.status
    return current


def utc_now() -> datetime:
    return datetime.now(UTC)
