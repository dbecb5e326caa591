"""Canonical events to deliver in tests: a new case and its follow-ups, valid by construction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from broker.model.events import EVENT_ADAPTER, AnyEvent


def _envelope(event_type: str, *, source: str, occurred_at: datetime | None, event_id: str | None,
              **fields: Any) -> AnyEvent:
    return EVENT_ADAPTER.validate_python({
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": "1.0",
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "source": source,
        **fields,
    })


def case_created(case_id: str | None = None, *, service_code: str = "highways.pothole", source: str = "crm",
                 occurred_at: datetime | None = None, event_id: str | None = None, **case_fields: Any) -> AnyEvent:
    """A ``case.created`` for a resident's report; ``case_fields`` replace the defaults."""
    case: dict[str, Any] = {
        "case_id": case_id or f"KIT-{uuid.uuid4().hex[:10]}",
        "service_code": service_code,
        "channel": "web",
        "description": "Deep pothole outside number 12",
        "location": {"easting": 530000.0, "northing": 180000.0, "postcode": "SW1A 1AA",
                     "lat": 51.50101, "lon": -0.14156},
        "reporter": {"kind": "person", "person": {"name": "Ada Lovelace", "email": "ada@example.org",
                                                  "phone": "020 7946 0000"}},
        "wants_updates": True,
        "attributes": {},
    }
    case.update(case_fields)
    return _envelope("case.created", source=source, occurred_at=occurred_at, event_id=event_id, case=case)


def note_added(case_id: str, text: str = "Resident called again", *, source: str = "crm",
               occurred_at: datetime | None = None, event_id: str | None = None) -> AnyEvent:
    return _envelope("case.note_added", source=source, occurred_at=occurred_at, event_id=event_id,
                     case={"case_id": case_id}, note={"text": text})


def status_changed(case_id: str, status: str, *, reason: str | None = None, source: str = "crm",
                   occurred_at: datetime | None = None, event_id: str | None = None) -> AnyEvent:
    change: dict[str, Any] = {"status": status}
    if reason:
        change["reason"] = reason
    return _envelope("case.status_changed", source=source, occurred_at=occurred_at, event_id=event_id,
                     case={"case_id": case_id}, change=change)
