"""The canonical, versioned case model: every case and every event about it, as pydantic models.

What every stage speaks. The envelope (``event_id``, ``event_type``, ``schema_version``, ``source``, ...) and the
case are validated here, once, with each field at fault named (:mod:`broker.model.validation`); their JSON Schema is
published in ``docs/schema/`` (:mod:`broker.model.schema`). Only adapters translate it to a LOB system's format.
"""

from broker.model.case import (
    AnonymousReporter,
    Attachment,
    Case,
    CaseStatus,
    Channel,
    IdentifiedReporter,
    Location,
    Person,
    RepresentativeReporter,
)
from broker.model.events import (
    SCHEMA_VERSION,
    AnyEvent,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseRef,
    CaseStatusChanged,
    CaseUpdated,
    EventType,
    Note,
    StatusChange,
    parse_event,
)

__all__ = [
    "SCHEMA_VERSION",
    "AnonymousReporter",
    "AnyEvent",
    "Attachment",
    "Case",
    "CaseClosed",
    "CaseCreated",
    "CaseNoteAdded",
    "CaseRef",
    "CaseStatus",
    "CaseStatusChanged",
    "CaseUpdated",
    "Channel",
    "EventType",
    "IdentifiedReporter",
    "Location",
    "Note",
    "Person",
    "RepresentativeReporter",
    "StatusChange",
    "parse_event",
]
