"""Builders of canonical envelopes for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def case_created(case_id: str | None = None, *, source: str = "crm", service_code: str = "highways.pothole",
                 **case_fields: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "case_id": case_id or f"CASE-{uuid.uuid4().hex[:10]}",
        "service_code": service_code,
        "channel": "web",
        "description": "Deep pothole outside number 12",
        "location": {"easting": 530000.0, "northing": 180000.0, "postcode": "SW1A 1AA"},
        "reporter": {"kind": "person", "person": {"name": "Ada Lovelace", "email": "ada@example.org",
                                                  "phone": "020 7946 0000"}},
        "wants_updates": True,
        "attributes": {"depth_mm": 80, "on_road": True},
    }
    case.update(case_fields)
    return envelope("case.created", source=source, case=case)


def envelope(event_type: str, *, source: str = "crm", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": "1.0",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": source,
        **fields,
    }


def note_added(case_id: str, text: str = "Resident called again", *, source: str = "crm") -> dict[str, Any]:
    return envelope("case.note_added", source=source, case={"case_id": case_id}, note={"text": text})


def status_changed(case_id: str, status: str, *, source: str = "crm") -> dict[str, Any]:
    return envelope("case.status_changed", source=source, case={"case_id": case_id}, change={"status": status})
