"""Log lines: one JSON object each, personal data redacted, whatever the values logged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from broker.logging import redact_personal_data, render_json


def test_personal_data_is_redacted_and_the_rest_kept() -> None:
    event = {"event": "event.accepted", "case_id": "C-1", "email": "ada@example.org", "description": "outside no. 4"}
    assert redact_personal_data(None, "info", event) == {
        "event": "event.accepted", "case_id": "C-1", "email": "[redacted]", "description": "[redacted]"}


def test_a_line_is_one_json_object_with_values_written_plainly() -> None:
    event_id = uuid.uuid4()
    line = render_json(None, "info", {"event": "delivery.succeeded", "event_id": event_id, "targets": ["highways"],
                                      "at": datetime(2026, 11, 24, 9, 30, tzinfo=UTC), "error": ValueError("boom"),
                                      "note": "naïve café"})
    assert "\n" not in line
    assert json.loads(line) == {"event": "delivery.succeeded", "event_id": str(event_id), "targets": ["highways"],
                                "at": "2026-11-24T09:30:00Z", "error": "boom", "note": "naïve café"}


def test_what_the_fast_encoder_cannot_write_still_makes_a_line() -> None:
    line = render_json(None, "warning", {"event": "odd", "raw": b"\xff\xfe", "count": 3})
    assert json.loads(line) == {"event": "odd", "raw": repr(b"\xff\xfe"), "count": 3}
