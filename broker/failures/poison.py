"""Messages that cannot be processed however often they are tried: recorded as failed, never looped on.

Two ways in: a consumer whose handler keeps raising for one message hands it over after a few tries; and, on
RabbitMQ, a message delivered more often than its quorum queue's delivery limit (typically because processing
it kills the worker) is dead-lettered to ``<namespace>.dead-letters``, whose consumer hands it over here. The
transport says which kind of message it was (an event for intake, or a delivery pointer) and why.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from broker.errors import PermanentDeliveryError
from broker.store import claims, deliveries
from broker.store.database import Store
from broker.store.failures import record_intake_failure

log = structlog.get_logger("casebridge.poison")

REASON = "poison_message"


class PoisonRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store

    def delivery(self, body: bytes, why: str) -> None:
        """A delivery pointer that could not be processed: its delivery fails, for support staff."""
        self._delivery(body, why)
        log.error("message.poison", kind="delivery", reason=why)

    def intake(self, body: bytes, why: str) -> None:
        """An inbound event that could not be processed: it goes to the failed messages, as received."""
        self._intake(body, why)
        log.error("message.poison", kind="intake", reason=why)

    def _delivery(self, body: bytes, why: str) -> None:
        pointer = _json(body)
        delivery_id = pointer.get("delivery_id") if isinstance(pointer, dict) else None
        if not isinstance(delivery_id, int):
            record_intake_failure(self.store, stage="delivery", reason=REASON, error_text=why, raw_body=body,
                                  event_id=None, error_class="poison")
            return
        pending = claims.load_pending(self.store, delivery_id)
        if pending is None:
            return  # settled meanwhile: nothing is waiting on it
        deliveries.record_failed(self.store, pending, attempts=pending.attempts,
                                 error=PermanentDeliveryError(REASON, why), error_class="poison")

    def _intake(self, body: bytes, why: str) -> None:
        raw = _json(body)
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        record_intake_failure(self.store, reason=REASON, error_text=why, raw_body=body,
                              event_id=str(event_id) if event_id else None, error_class="poison")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
