"""Messages that cannot be processed however often they are tried: recorded as failed, never looped on.

Two ways in: a consumer whose handler keeps raising for one message hands it over after a few tries; and, on
RabbitMQ, a message delivered more often than its quorum queue's delivery limit (typically because processing
it kills the worker) is dead-lettered to ``<namespace>.dead-letters``, whose consumer hands it over here.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from kombu.message import Message

from broker.errors import PermanentDeliveryError
from broker.store import claims, deliveries
from broker.store.database import Store
from broker.store.failures import record_intake_failure
from broker.transport.topology import Topology

log = structlog.get_logger("casebridge.poison")

REASON = "poison_message"


class PoisonRecorder:
    def __init__(self, store: Store, topology: Topology) -> None:
        self.store = store
        self.topology = topology

    def for_queue(self, queue_name: str) -> Any:
        """A consumer's ``on_poison`` callback for messages of ``queue_name``."""
        return lambda message, why: self.record(queue_name, message, why)

    def dead_lettered(self, message: Message) -> None:
        """Handler of the dead-letter queue: the original queue and count come from RabbitMQ's headers."""
        headers = message.headers or {}
        queue_name = str(headers.get("x-first-death-queue", ""))
        deaths = headers.get("x-death") or [{}]
        count = deaths[0].get("count") if isinstance(deaths[0], dict) else None
        limit = self.topology.delivery_limit
        self.record(queue_name, message, f"delivered more than {limit} times without being processed"
                                         f"{f' ({count} dead-lettering(s))' if count else ''}; it may crash workers")

    def record(self, queue_name: str, message: Message, why: str) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        if queue_name.startswith(f"{self.topology.namespace}.deliver."):
            self._delivery(body, why)
        else:
            self._intake(body, why)
        log.error("message.poison", queue=queue_name, reason=why)

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
