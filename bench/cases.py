"""The case the benchmarks send: a canonical ``case.created`` envelope of the shape and size a council CRM posts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime


def envelope(case_id: str) -> bytes:
    """A realistic ~1 kB envelope, the shape a council CRM sends."""
    return json.dumps({
        "event_id": str(uuid.uuid4()),
        "event_type": "case.created",
        "schema_version": "1.0",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "crm",
        "case": {
            "case_id": case_id,
            "service_code": "highways.pothole",
            "channel": "web",
            "description": "Deep pothole in the nearside lane outside number 12, about 300 mm across",
            "location": {"easting": 530123.0, "northing": 180456.0, "postcode": "SW1A 1AA", "usrn": "8400123"},
            "reporter": {"kind": "person", "person": {"name": "Resident Name", "email": "resident@example.org",
                                                      "phone": "020 7946 0000"}},
            "wants_updates": True,
            "attributes": {"depth_mm": 80, "on_road": True, "hazard": "cyclists"},
        },
    }).encode()
