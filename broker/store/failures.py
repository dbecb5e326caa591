"""The failed-message store for messages that could not be taken in or read at all (with their raw body).

Deliveries that fail at their target record theirs in deliveries.py, against the delivery.
"""

from __future__ import annotations

from typing import Any

from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import AuditEntry, FailedMessage

_KEEP_BYTES = 1_048_576


def record_intake_failure(
    store: Store,
    *,
    stage: str = "intake",
    reason: str,
    error_text: str,
    raw_body: bytes,
    event_id: str | None,
    details: list[dict[str, str]] | None = None,
    error_class: str = "invalid",
) -> int:
    now = utc_now()
    with store.transaction() as session:
        failed = FailedMessage(
            stage=stage, event_id=event_id, error_class=error_class, reason=reason, error_text=error_text,
            raw_body=raw_body[:_KEEP_BYTES], attempts=1, first_failed_at=now, last_failed_at=now,
        )
        session.add(failed)
        detail: dict[str, Any] = {"reason": reason, "message": error_text, "errors": details or []}
        session.add(AuditEntry(event_id=event_id, step="refused", actor="casebridge", detail=detail, at=now))
        session.flush()
        return failed.id
